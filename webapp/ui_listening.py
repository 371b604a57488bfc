"""The listening-test tabs of the page: the headphone check, blind trials in sessions, results.

The page enforces what makes a rating worth keeping: a headphone check before the first
trial; a sample's score counts only once the sample (and, in MUSHRA, the open reference) has
been played and its slider set, and the submit button says what is left; samples play in plain
players (no waveform picture). The server checks the same (`RatingsStore.submit`), and refuses
any answer sooner than one excerpt length after the trial was issued.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr

from .figures import agreement_figure, mushra_figure, preference_figure, rounded
from .lab import LabApp, TrialState
from .listeners import RateLimited
from .service import Separation
from .store import NO_PREFERENCE, IncompleteTrial, RatingError
from .trials import HEADPHONE_TRIALS
from .ui_common import components, counted, error, page_text

MOS_LABEL = "{}: overall quality, 1 bad - 5 excellent (optional: not rated)"
MAX_TRIAL_SAMPLES = 6  # MUSHRA: hidden reference + anchor + up to 4 models
STAT_HEADERS = ["condition", "source", "n", "mean", "95% CI low", "95% CI high"]
# The browser's own player: no waveform picture (the hidden reference's was the reference's),
# and no download or share button (nothing invites taking a sample apart outside the test).
PLAIN = {"waveform_options": gr.WaveformOptions(show_recording_waveform=False), "buttons": []}


def client_of(lab: LabApp, request: gr.Request | None) -> str:
    return lab.client_key(request)


# ---------------------------------------------------------------------------- Listen and rate


@dataclass
class CheckPanel:
    group: gr.Group
    players: list[gr.Audio]
    answers: list[gr.Radio]
    submit: gr.Button


@dataclass
class RatingTab:
    start: gr.Button
    info: gr.Markdown
    check: CheckPanel
    reference: gr.Audio
    rows: list[gr.Row]
    samples: list[gr.Audio]
    sliders: list[gr.Slider]
    ab_group: gr.Group
    choice: gr.Radio
    mos_a: gr.Slider
    mos_b: gr.Slider
    submit: gr.Button
    submit_msg: gr.Markdown


def build_rating_tab(lab: LabApp) -> RatingTab:
    gr.Markdown(
        "Samples are labelled A, B, ...; which model made which is hidden and shuffled in every trial, and all "
        "are played at the same loudness. With true stems: rate each sample from 0 (bad) to 100 (excellent) "
        "against the open **reference** (one sample is the hidden reference itself, another a low-pass "
        "anchor; MUSHRA, ITU-R BS.1534). Without: say which of A and B you prefer and score each from 1 to 5. "
        f"A session is {counted(lab.config.session_trials, 'trial')}; please use headphones."
    )
    start = gr.Button("Start a blind trial", variant="primary")
    info = gr.Markdown()
    with gr.Group(visible=False) as group:
        gr.Markdown("**Headphone check** (once): each clip plays three tones. Which of the three is the **softest**?")
        players, answers = [], []
        for i in range(HEADPHONE_TRIALS):
            with gr.Row():
                players.append(gr.Audio(label=f"Check {i + 1}", type="filepath", interactive=False, **PLAIN, scale=2))
                answers.append(gr.Radio(["1", "2", "3"], label="softest tone", scale=1))
        check_submit = gr.Button("Send my answers")
    reference = gr.Audio(label="Reference (open)", type="filepath", interactive=False, visible=False, **PLAIN)
    rows, samples, sliders = [], [], []
    for i in range(MAX_TRIAL_SAMPLES):
        with gr.Row(visible=False) as row:
            samples.append(
                gr.Audio(label=f"Sample {chr(65 + i)}", type="filepath", interactive=False, scale=2, **PLAIN)
            )
            sliders.append(gr.Slider(0, 100, value=50, step=1, label=f"Sample {chr(65 + i)}: not rated yet", scale=1))
        rows.append(row)
    with gr.Group(visible=False) as ab_group:
        choice = gr.Radio(["A", "B", NO_PREFERENCE], label="Which sounds better?")
        with gr.Row():
            mos_a = gr.Slider(1, 5, value=3, step=1, label=MOS_LABEL.format("A"))
            mos_b = gr.Slider(1, 5, value=3, step=1, label=MOS_LABEL.format("B"))
    submit = gr.Button("Submit ratings", visible=False, interactive=False)
    submit_msg = gr.Markdown()
    return RatingTab(
        start,
        info,
        CheckPanel(group, players, answers, check_submit),
        reference,
        rows,
        samples,
        sliders,
        ab_group,
        choice,
        mos_a,
        mos_b,
        submit,
        submit_msg,
    )


def show_trial(tab: RatingTab, trial, sep: Separation, index: int, total: int) -> dict:
    """Named updates of the rating tab for a new trial (`index` of `total` in the session)."""
    mushra = trial.kind == "mushra"
    what = (
        f"**Trial {index} of {total}**: MUSHRA on **{trial.source}** of *{sep.clip}*: play the reference and "
        "every sample, then rate each against the reference."
        if mushra
        else f"**Trial {index} of {total}**: A/B on **{trial.source}** of *{sep.clip}*: play both, then choose."
    )
    updates = {
        tab.info: what,
        tab.check.group: gr.Group(visible=False),
        tab.reference: gr.Audio(value=str(trial.reference) if trial.reference else None, visible=mushra),
    }
    for i, (row, audio, slider) in enumerate(zip(tab.rows, tab.samples, tab.sliders, strict=True)):
        label = trial.labels[i] if i < len(trial.labels) else None
        updates |= {
            row: gr.Row(visible=label is not None),
            audio: gr.Audio(value=str(trial.files[label]) if label else None),
            slider: gr.Slider(value=50, visible=mushra, label=f"Sample {chr(65 + i)}: not rated yet"),
        }
    needed = trial.labels + (["reference"] if mushra else [])
    return updates | {
        tab.ab_group: gr.Group(visible=not mushra),
        tab.choice: gr.Radio(value=None),
        tab.mos_a: gr.Slider(value=3, label=MOS_LABEL.format("A")),
        tab.mos_b: gr.Slider(value=3, label=MOS_LABEL.format("B")),
        tab.submit_msg: "",
        tab.submit: submit_button(needed, trial.labels if mushra else [], choose=not mushra),
    }


def missing_text(unplayed: list[str], unset: list[str], choose: bool = False) -> str:
    """What is left before a trial can be submitted, in words ("play B and the reference; rate A")."""

    def names(labels):
        words = ["the reference" if x == "reference" else x for x in labels]
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]

    parts = ([f"play {names(unplayed)}"] if unplayed else []) + ([f"rate {names(unset)}"] if unset else [])
    return "; ".join(parts + (["choose"] if choose else []))


def submit_button(unplayed: list[str], unset: list[str], choose: bool = False) -> gr.Button:
    left = missing_text(unplayed, unset, choose)
    return gr.Button(f"Submit ratings ({left} first)" if left else "Submit ratings", visible=True, interactive=not left)


def wire_marks(lab: LabApp, tab: RatingTab, trial_state: gr.State, listener: gr.BrowserState, mos_touched) -> None:
    """What the listener has done in a trial (played a sample, set a slider, chosen): recorded on the
    server as it happens, and the submit button says what is left."""

    def button_for(state: TrialState, choice) -> gr.Button:
        """The submit button as the trial stands: what is left to play, rate or choose."""
        trial = lab.store.get_trial(state.trial_id)
        needed = state.labels + (["reference"] if state.kind == "mushra" else [])
        unplayed = [x for x in needed if x not in trial.played]
        unset = [x for x in state.labels if x not in trial.moved] if state.kind == "mushra" else []
        return submit_button(unplayed, unset, choose=state.kind != "mushra" and choice is None)

    def marker(what: str, index: int | None):
        def on_mark(state, token, choice):
            if state is None:
                return {}
            label = "reference" if index is None else state.labels[index] if index < len(state.labels) else None
            before = lab.store.get_trial(state.trial_id)
            if label is None or before is None or label in getattr(before, what):
                return {}  # nothing new (a slider sends many input events while dragged)
            try:
                lab.mark(state.trial_id, token, label, what)
            except RatingError:
                return {}
            updates = {tab.submit: button_for(state, choice)}
            if what == "moved" and index is not None:
                updates[tab.sliders[index]] = gr.Slider(label=f"Sample {label}: score")
            return updates

        return on_mark

    def on_choice(state, choice):
        return {} if state is None else {tab.submit: button_for(state, choice)}

    def mos_setter(name: str, slider: gr.Slider):
        def on_mos(touched):
            touched = sorted({*touched, name})
            return {mos_touched: touched, slider: gr.Slider(label=f"{name}: overall quality, 1 bad - 5 excellent")}

        return on_mos

    for i, audio in enumerate(tab.samples):
        audio.play(
            marker("played", i),
            [trial_state, listener, tab.choice],
            [tab.submit],
            api_visibility="private",
            queue=False,
        )
    tab.reference.play(
        marker("played", None), [trial_state, listener, tab.choice], [tab.submit], api_visibility="private", queue=False
    )
    for i, slider in enumerate(tab.sliders):
        # `input`: any change by the listener (drag, keyboard, the number box), never the page's own
        # reset to the midpoint; the last of a burst is what counts
        slider.input(
            marker("moved", i),
            [trial_state, listener, tab.choice],
            [tab.submit, slider],
            api_visibility="private",
            queue=False,
            trigger_mode="always_last",
        )
    tab.choice.input(on_choice, [trial_state, tab.choice], [tab.submit], api_visibility="private", queue=False)
    for name, slider in (("A", tab.mos_a), ("B", tab.mos_b)):
        slider.input(
            mos_setter(name, slider),
            mos_touched,
            [mos_touched, slider],
            api_visibility="private",
            queue=False,
            trigger_mode="always_last",
        )


def no_listener_text(exc: Exception) -> str:
    """Why this browser has no listener id, in the listener's words, and until when."""
    if isinstance(exc, RateLimited):
        at = time.strftime("%H:%M UTC", time.gmtime(time.time() + exc.wait))
        return (
            "Ratings cannot start from this browser yet: this network address has had as many new "
            f"listeners in the last hour as the app takes ({exc}). Reloading the page does not help; "
            f"please come back after {at}. (Organisers of a group that shares one network can raise "
            "the limit: APP_LIMIT_LISTENERS.)"
        )
    return f"Ratings cannot start from this browser: {exc}"


def wire_rating_tab(lab: LabApp, tab: RatingTab, result: gr.State, listener: gr.BrowserState, refresh_results) -> None:
    trial_state = gr.State(None)
    mos_touched = gr.State([])  # the A/B quality sliders the listener has set in this trial

    def on_start(sep, token, request: gr.Request):
        issued = {}
        try:
            client = client_of(lab, request)
            if token is None:  # the page's load could not issue one (the address's limit): try again now
                token = lab.new_listener(client)
                issued = {listener: token}
            if lab.store.headphone_score(lab.listener(token)) is None:
                files = lab.headphone_check(token, client)
                return {
                    **issued,
                    tab.info: "Before the first trial: a short headphone check.",
                    tab.check.group: gr.Group(visible=True),
                    **{p: str(f) for p, f in zip(tab.check.players, files, strict=True)},
                }
            trial, sep = lab.trial_for(sep, token, client)
        except RateLimited as exc:
            if token is None:  # no id could be issued at all: say why, and until when
                raise gr.Error(page_text(no_listener_text(exc)), print_exception=False) from None
            raise error(exc) from None
        except Exception as exc:
            raise error(exc) from None
        # the session's place is the server's count of this listener's answers, not the page's
        index = lab.store.rated_trials(lab.listener(token)) % lab.config.session_trials + 1
        return {
            **issued,
            trial_state: TrialState(trial.trial_id, trial.kind, trial.labels),
            mos_touched: [],
            **show_trial(tab, trial, sep, index, lab.config.session_trials),
        }

    def on_check(token, *answers):
        try:
            if any(a is None for a in answers):
                raise RatingError("answer every check (1, 2 or 3)")
            score, passed = lab.answer_headphone_check(token, [int(a) for a in answers])
        except Exception as exc:
            raise error(exc) from None
        verdict = (
            "passed: thank you."
            if passed
            else "not passed: your ratings will not count in the results "
            "(are you on loudspeakers? headphones make the difference)."
        )
        return {
            tab.check.group: gr.Group(visible=False),
            tab.info: f"Headphone check: {score} of {HEADPHONE_TRIALS} right, {verdict} Start a trial when ready.",
        }

    def on_submit(state, token, request: gr.Request, *values):  # Gradio puts the request here
        scores, (pref, a, b, touched) = values[:MAX_TRIAL_SAMPLES], values[MAX_TRIAL_SAMPLES:]
        if state is None:
            raise gr.Error("start a trial first", print_exception=False)
        mos = {k: v for k, v in (("A", a), ("B", b)) if k in touched}  # only the scores the listener set
        answer = (
            {"scores": dict(zip(state.labels, scores, strict=False))}
            if state.kind == "mushra"
            else {"choice": pref, "mos": mos if state.kind == "ab" and mos else None}
        )
        try:
            lab.answer(token, state.trial_id, answer, client_of(lab, request), page=True)
        except IncompleteTrial as exc:  # the submit button was enabled by hand: say what is left
            raise gr.Error(missing_text(exc.unplayed, exc.unset), print_exception=False) from None
        except Exception as exc:
            raise error(exc) from None
        done = lab.store.rated_trials(lab.listener(token))
        total = lab.config.session_trials
        message = (
            f"Saved ({done % total or total} of {total}). Start the next trial when ready."
            if done % total
            else f"Saved: that was the last of {total}. Thank you! Another session is welcome."
        )
        return {trial_state: None, tab.submit_msg: message, tab.submit: gr.Button(visible=False)}

    tab.start.click(
        on_start,
        [result, listener],
        [trial_state, mos_touched, listener, *components(tab)],
        api_visibility="private",
        concurrency_limit=4,
        concurrency_id="trials",
    )
    tab.check.submit.click(
        on_check, [listener, *tab.check.answers], [tab.check.group, tab.info], api_visibility="private"
    )
    wire_marks(lab, tab, trial_state, listener, mos_touched)
    inputs = [trial_state, listener, *tab.sliders, tab.choice, tab.mos_a, tab.mos_b, mos_touched]
    refresh_results(
        tab.submit.click(on_submit, inputs, [trial_state, tab.submit_msg, tab.submit], api_visibility="private").then
    )


# ---------------------------------------------------------------------------- Results


@dataclass
class ResultsTab:
    text: gr.Markdown
    screening: gr.Dataframe
    mushra_plot: gr.Plot
    mushra: gr.Dataframe
    preference_plot: gr.Plot
    preference: gr.Dataframe
    mos: gr.Dataframe
    agreement_plot: gr.Plot
    agreement: gr.Dataframe
    refresh: gr.Button
    token: gr.Textbox
    export: gr.Button
    export_link: gr.Markdown


def build_results_tab() -> ResultsTab:
    text = gr.Markdown()
    screening = gr.Dataframe(
        headers=["criterion", "listeners excluded", "their ratings", "rule"], interactive=False, label="Screening"
    )
    with gr.Row():
        mushra_plot = gr.Plot(label="MUSHRA: mean and 95% CI")
        preference_plot = gr.Plot(label="A/B preference: rate and 95% CI")
    mushra = gr.Dataframe(headers=STAT_HEADERS, label="MUSHRA scores (0-100) of the listeners kept", interactive=False)
    preference = gr.Dataframe(
        headers=["x", "y", "x preferred", "y preferred", "no preference", "rate x", "95% CI", "p (binomial)"],
        label="A/B preference",
        interactive=False,
    )
    mos = gr.Dataframe(headers=STAT_HEADERS, label="Overall quality (1-5) in A/B trials", interactive=False)
    gr.Markdown(
        "**Do the metrics predict the listeners?** Each MUSHRA excerpt's conditions are scored with "
        "BSSEval v4 and SI-SDR on the same excerpt; Kendall's tau with the mean kept score (95% bootstrap CI)."
    )
    agreement_plot = gr.Plot(label="metric vs mean listener score")
    agreement = gr.Dataframe(headers=["metric", "pairs", "Kendall's tau", "95% CI"], interactive=False)
    refresh = gr.Button("Refresh")
    with gr.Accordion("Admin: raw ratings (CSV)", open=False):
        token = gr.Textbox(label="Admin token", type="password")
        export = gr.Button("Get a download link (valid 60 s, once)")
        export_link = gr.Markdown()
    return ResultsTab(
        text,
        screening,
        mushra_plot,
        mushra,
        preference_plot,
        preference,
        mos,
        agreement_plot,
        agreement,
        refresh,
        token,
        export,
        export_link,
    )


def results_view(lab: LabApp, tab: ResultsTab) -> dict:
    s = lab.summary()
    text = (
        f"**{counted(s['ratings'], 'rating')}** from **{counted(s['listeners'], 'listener')}**; kept after "
        f"screening: **{counted(s['kept_ratings'], 'rating')}** from **{counted(s['kept_listeners'], 'listener')}** "
        f"(updated {time.strftime('%H:%M:%S')})."
    )
    api = s["api_ratings"]
    if api["rows"]:
        text += f" {counted(api['rows'], 'rating')} came over the API (scripts, no play records): " + (
            "counted (APP_COUNT_API_RATINGS)."
            if api["counted"]
            else "not counted (APP_COUNT_API_RATINGS=1 counts them)."
        )
    screening = [[c, v["listeners"], v["ratings"], v["rule"]] for c, v in s["screening"].items()]

    def stats(rows):
        return [
            [x["condition"], x["source"], x["n"], rounded(x["mean"]), rounded(x["low"]), rounded(x["high"])]
            for x in rows
        ]

    preference = [
        [
            p["x"],
            p["y"],
            p["wins_x"],
            p["wins_y"],
            p["ties"],
            rounded(p["rate_x"]),
            f"{rounded(p['low'])}-{rounded(p['high'])}",
            rounded(p["p"]),
        ]
        for p in s["preference"]
    ]
    agreement = lab.agreement()
    return {
        tab.text: text,
        tab.screening: screening,
        tab.mushra: stats(s["mushra"]["scores"]),
        tab.preference: preference,
        tab.mos: stats(s["mos"]),
        tab.mushra_plot: mushra_figure(s["mushra"]["scores"]),
        tab.preference_plot: preference_figure(s["preference"]),
        tab.agreement: [
            [m, a["n"], rounded(a["tau"]), f"{rounded(a['low'])} to {rounded(a['high'])}"] for m, a in agreement.items()
        ],
        tab.agreement_plot: agreement_figure(agreement),
    }


def wire_results_tab(lab: LabApp, tab: ResultsTab, demo: gr.Blocks):
    outputs = [
        tab.text,
        tab.screening,
        tab.mushra_plot,
        tab.mushra,
        tab.preference_plot,
        tab.preference,
        tab.mos,
        tab.agreement_plot,
        tab.agreement,
    ]

    def on_results():
        return results_view(lab, tab)

    def on_export(token_value, request: gr.Request):
        try:
            link = lab.export_link(token_value, client_of(lab, request))
        except Exception as exc:
            raise error(exc) from None
        return {tab.export_link: f"[Download ratings.csv]({link}) (streamed; the link works once, for 60 s)"}

    timer = gr.Timer(15)
    for trigger in (tab.refresh.click, timer.tick, demo.load):
        trigger(on_results, None, outputs, api_visibility="private", queue=False)
    tab.export.click(on_export, tab.token, tab.export_link, api_visibility="private")
    return lambda then: then(on_results, None, outputs, api_visibility="private")
