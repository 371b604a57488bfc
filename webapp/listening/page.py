"""The listening-test tabs of the page: the headphone check, blind trials in sessions, results.

A trial plays in one Web Audio player (`webapp.listening.player`): one transport over every sample,
switching at the same position, a loop region, keys, BS.1534's quality bands for MUSHRA. Its
submit waits until every sample (and MUSHRA's open reference) was heard for `APP_MIN_HEARD_S`
and every slider set; the server checks the same (`RatingsStore.submit`), and refuses any answer
sooner than one excerpt length after the trial was issued.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import gradio as gr

from ..figures import agreement_figure, mushra_figure, preference_figure, rounded
from ..lab import LabApp
from ..ui_common import components, counted, error, page_text
from .listeners import RateLimited
from .player import read_answer, trial_player, trial_value
from .results import Snapshot
from .stimuli import HEADPHONE_TRIALS, TrialAudio
from .store import IncompleteTrial, RatingError
from .study import FAILED_CHECK

STAT_HEADERS = ["condition", "source", "n", "mean", "95% CI low", "95% CI high"]
# The browser's own player for the headphone check: no waveform picture, no download button.
PLAIN = {"waveform_options": gr.WaveformOptions(show_recording_waveform=False), "buttons": []}


def client_of(lab: LabApp, request: gr.Request | None) -> str:
    return lab.study.client_key(request)


# ---------------------------------------------------------------------------- Listen and rate


@dataclass
class CheckPanel:
    group: gr.Group
    players: list[gr.Audio]
    answers: list[gr.Radio]
    submit: gr.Button


@dataclass
class RatingTab:
    intro: gr.Markdown
    start: gr.Button
    info: gr.Markdown
    check: CheckPanel
    player: gr.HTML
    submit_msg: gr.Markdown
    done: gr.Markdown  # the session-complete panel: the listener's completion codes, shown again on every visit


def intro_text(lab: LabApp) -> str:
    """What the tab asks of a listener; A/B is named only where two models can make it."""
    mushra = (
        "Samples are labelled A, B, ...; which model made which is hidden and shuffled in every trial, and all "
        "are played at the same loudness. With true stems: rate each sample from 0 (bad) to 100 (excellent) "
        "against the open **reference** (one sample is the hidden reference itself, another a low-pass "
        "anchor; MUSHRA, ITU-R BS.1534)."
    )
    ab = (
        " Without: say which of A and B you prefer and score each from 1 to 5."
        if len(lab.working_models()) >= 2
        else " (A/B trials between models need two; this app runs one, so every trial is MUSHRA.)"
    )
    return (
        f"{mushra}{ab} One player plays every sample: tap a letter to switch between them at the same "
        f"moment (on a keyboard: keys 1-6 and R, space to play or pause). A session is "
        f"{counted(lab.config.session_trials, 'trial')}; please use headphones."
    )


def build_rating_tab(lab: LabApp, done: gr.Markdown) -> RatingTab:
    """The tab; `done` is the session-complete panel, built above the tabs so that it shows on any
    tab the page opens on."""
    intro = gr.Markdown(intro_text(lab))
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
    player = trial_player()
    submit_msg = gr.Markdown()
    return RatingTab(intro, start, info, CheckPanel(group, players, answers, check_submit), player, submit_msg, done)


def show_trial(lab: LabApp, tab: RatingTab, trial: TrialAudio, index: int | None, again: bool = False) -> dict:
    """Named updates of the rating tab for a trial (`index` of the session's trials; None for a
    trial on the listener's own separation, which is outside the sessions)."""
    total = lab.config.session_trials
    mushra = trial.kind == "mushra"
    where = f"**Trial {index} of {total}**" if index is not None else "**Your own separation**"
    what = (
        f"{where}: MUSHRA on **{trial.source}** of *{trial.clip}*: listen to the reference and "
        "every sample, then rate each against the reference."
        if mushra
        else f"{where}: A/B on **{trial.source}** of *{trial.clip}*: listen to both, then choose."
    )
    if index is None and not lab.config.count_own_trials:
        what += " (Kept for you, not counted in the study: nobody else rates this audio.)"
    if again:
        what += " (Your unanswered trial, shown again.)"
    return {
        tab.info: what,
        tab.check.group: gr.Group(visible=False),
        tab.player: trial_value(trial, lab.config.min_heard),
        tab.submit_msg: "",
    }


def completion_panel(lab: LabApp, listener: str) -> dict:
    """The session-complete panel's update: every completion code of this listener, newest first
    (it stays, and comes back on any reload or visit), or hidden before the first session ends."""
    codes = lab.study.campaign.completed_codes(listener)
    if not codes:
        return gr.Markdown(visible=False)
    lines = [f"### Session {len(codes)} complete: thank you!", f"Your completion code: **{codes[-1]}**"]
    lines.append("If a study sent you here, paste this code there. Another session is welcome.")
    if len(codes) > 1:
        lines.append("Earlier sessions: " + ", ".join(f"{i + 1}: {c}" for i, c in enumerate(codes[:-1])))
    return gr.Markdown("\n\n".join(lines), visible=True)


def resume_trial(lab: LabApp, tab: RatingTab, trial_state: gr.State, tabs: gr.Tabs, token) -> dict:
    """On a page load: a listener with a trial open (issued, not answered, its files still there) is
    taken to the listening tab with that trial shown again; one in mid-session is taken there too,
    told where the session stands. Nothing for anyone else."""
    trial = lab.study.open_trial(token)
    if trial is not None:
        index = None if trial.own else lab.study.campaign.session(lab.study.listener(token)).done + 1
        return {
            tabs: gr.Tabs(selected="listen"),
            trial_state: trial.trial_id,
            **show_trial(lab, tab, trial, index, True),
        }
    done = lab.study.campaign.session(lab.study.listener(token)).done
    if done:
        where = f"Welcome back: {done} of {lab.config.session_trials} trials of this session are done."
        return {tabs: gr.Tabs(selected="listen"), tab.info: f"{where} Start the next trial when ready."}
    return {}


def check_verdict(lab: LabApp, score: int, passed: bool) -> str:
    """What the page says after the headphone check: passed; or failed, and the listener's part
    ends there (ITU-T P.808's practice), unless the campaign lets them go on uncounted."""
    if passed:
        verdict = "passed: thank you. Start a trial when ready."
    elif lab.config.allow_failed_headphones:
        verdict = (
            "not passed: you may go on, but your ratings will not count in the results "
            "(are you on loudspeakers? headphones make the difference). Start a trial when ready."
        )
    else:
        verdict = f"not passed. {FAILED_CHECK}"
    return f"Headphone check: {score} of {HEADPHONE_TRIALS} right, {verdict}"


def page_trial(value) -> str | None:
    """The trial id the page's player says it answers (its word: checked before it is used)."""
    try:
        sent = json.loads(value) if isinstance(value, str) and value else None
    except ValueError:
        return None
    return sent.get("trial_id") if isinstance(sent, dict) and isinstance(sent.get("trial_id"), str) else None


def restored_trial(lab: LabApp, token, value) -> str:
    """The trial a page answers after the server restarted under it (the page still shows the
    trial; the server's state for that page is new): the listener's open trial, if that is the one
    the page names."""
    trial = lab.study.open_trial(token)
    if trial is None or page_trial(value) != trial.trial_id:
        raise RatingError("start a trial first")
    return trial.trial_id


def saved_message(lab: LabApp, token, trial_id: str | None = None) -> str:
    """What the page says once an answer is saved: where the session stands (the panel above
    shows the code at a session's end), or, for a trial on the listener's own separation that the
    sessions do not count, just that it was kept."""
    trial = lab.study.store.get_trial(trial_id) if trial_id else None
    if trial is not None and trial.own and not lab.config.count_own_trials:
        return "Saved (your own separation: kept for you, outside the study's sessions). Start a trial when ready."
    session = lab.study.campaign.session(lab.study.listener(token))
    total = lab.config.session_trials
    if session.done:
        return f"Saved ({session.done} of {total}). Start the next trial when ready."
    return f"Saved: that was the last of {total}. Thank you! Your completion code is above."


def missing_text(unheard: list[str], unset: list[str], seconds: float = 0.0) -> str:
    """What is left before a trial can be submitted, in words ("listen to B and the reference for
    3 s each; rate A"), as the player says it."""

    def names(labels):
        words = ["the reference" if x == "reference" else x for x in labels]
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]

    each = " each" if len(unheard) > 1 else ""
    parts = [f"listen to {names(unheard)} for {seconds:g} s{each}"] if unheard else []
    return "; ".join(parts + ([f"rate {names(unset)}"] if unset else []))


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


def wire_rating_tab(lab: LabApp, tab: RatingTab, result: gr.State, listener: gr.BrowserState) -> gr.State:
    """The tab's events; returns the state that holds the id of the trial on show (the server's,
    not the page's word), which the page's load event sets for a trial shown again."""
    trial_state = gr.State(None)

    def on_start(sep, token, request: gr.Request):
        issued = {}
        try:
            client = client_of(lab, request)
            if token is None:  # the page's load could not issue one (the address's limit): try again now
                token = lab.study.new_listener(client)
                issued = {listener: token}
            if lab.study.store.headphone_score(lab.study.listener(token)) is None:
                files = lab.study.headphone_check(token, client)
                return {
                    **issued,
                    tab.info: "Before the first trial: a short headphone check.",
                    tab.check.group: gr.Group(visible=True),
                    tab.player: "",
                    **{p: str(f) for p, f in zip(tab.check.players, files, strict=True)},
                }
            # a trial issued and not answered (Start pressed again, a reload) is shown again: a
            # new one would leave it open and let a listener skip the excerpts they do not like
            trial = lab.study.open_trial(token)
            again = trial is not None
            if trial is None:
                trial, sep = lab.study.trial_for(sep, token, client)
        except RateLimited as exc:
            if token is None:  # no id could be issued at all: say why, and until when
                raise gr.Error(page_text(no_listener_text(exc)), print_exception=False) from None
            raise error(exc) from None
        except Exception as exc:
            raise error(exc) from None
        # the session's place is the server's count of this listener's answers, not the page's
        index = None if trial.own else lab.study.campaign.session(lab.study.listener(token)).done + 1
        return {
            **issued,
            trial_state: trial.trial_id,
            **show_trial(lab, tab, trial, index, again),
        }

    def on_check(token, *answers):
        try:
            if any(a is None for a in answers):
                raise RatingError("answer every check (1, 2 or 3)")
            score, passed = lab.study.answer_headphone_check(token, [int(a) for a in answers])
        except Exception as exc:
            raise error(exc) from None
        return {tab.check.group: gr.Group(visible=False), tab.info: check_verdict(lab, score, passed)}

    def on_submit(trial_id, token, value, request: gr.Request):
        try:
            if trial_id is None:  # the server restarted under the page (its session state is new)
                trial_id = restored_trial(lab, token, value)
            answer = read_answer(value, trial_id)
            lab.study.answer(token, trial_id, answer, client_of(lab, request), page=True)
        except IncompleteTrial as exc:  # the page's own check was got round: say what is left
            raise gr.Error(missing_text(exc.unheard, exc.unset, exc.seconds), print_exception=False) from None
        except Exception as exc:
            raise error(exc) from None
        return None

    def on_saved(token, value):
        return {
            tab.submit_msg: saved_message(lab, token, page_trial(value)),
            tab.player: "",
            tab.done: completion_panel(lab, lab.study.listener(token)),
        }

    tab.start.click(
        on_start,
        [result, listener],
        [trial_state, listener, *components(tab)],
        api_visibility="private",
        concurrency_limit=4,
        concurrency_id="trials",
    )
    tab.check.submit.click(
        on_check, [listener, *tab.check.answers], [tab.check.group, tab.info], api_visibility="private"
    )
    # the answer's only output is the (invisible) state: a refusal's badge would sit on the player;
    # once saved, the player is cleared and the message shown
    tab.player.submit(on_submit, [trial_state, listener, tab.player], trial_state, api_visibility="private").success(
        on_saved,
        [listener, tab.player],
        [tab.submit_msg, tab.player, tab.done],
        api_visibility="private",
        show_progress="hidden",
    )
    return trial_state


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
    ab_shown: bool  # whether the A/B parts were built visible (two models ran then)


def build_results_tab(lab: LabApp) -> ResultsTab:
    # A/B needs two models: with one, its plot and tables would stay empty for good (the page's
    # load shows or hides them again as the models are then: one may fail to load meanwhile)
    ab = len(lab.working_models()) >= 2
    text = gr.Markdown()
    screening = gr.Dataframe(
        headers=["criterion", "listeners excluded", "their ratings", "rule"], interactive=False, label="Screening"
    )
    with gr.Row():
        mushra_plot = gr.Plot(label="MUSHRA: mean and 95% CI")
        preference_plot = gr.Plot(label="A/B preference: rate and 95% CI", visible=ab)
    mushra = gr.Dataframe(headers=STAT_HEADERS, label="MUSHRA scores (0-100) of the listeners kept", interactive=False)
    preference = gr.Dataframe(
        headers=["x", "y", "x preferred", "y preferred", "no preference", "rate x", "95% CI", "p (binomial)"],
        label="A/B preference",
        interactive=False,
        visible=ab,
    )
    mos = gr.Dataframe(headers=STAT_HEADERS, label="Overall quality (1-5) in A/B trials", interactive=False, visible=ab)
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
        ab,
    )


def results_view(lab: LabApp, tab: ResultsTab, snap: Snapshot) -> dict:
    """The Results tab's updates for a snapshot of the results (`webapp.listening.results`)."""
    s = snap.summary
    made = time.strftime("%H:%M:%S UTC", time.gmtime(snap.made))
    text = (
        f"**{counted(s['ratings'], 'rating')}** from **{counted(s['listeners'], 'listener')}** counted; kept after "
        f"screening: **{counted(s['kept_ratings'], 'rating')}** from **{counted(s['kept_listeners'], 'listener')}** "
        f"(computed {made}; each listener's first rating of a stimulus counts, "
        f"{counted(s['repeats_left_out'], 'repeated rating')} left out of the means)."
    )
    for what, setting, words in (
        ("api_ratings", "APP_COUNT_API_RATINGS", "came over the API (scripts, no play records)"),
        ("own_ratings", "APP_COUNT_OWN_TRIALS", "are of listeners' own separations (stimuli nobody else rates)"),
    ):
        if s[what]["rows"]:
            text += f" {counted(s[what]['rows'], 'rating')} {words}: " + (
                f"counted ({setting})." if s[what]["counted"] else f"not counted ({setting}=1 counts them)."
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
    agreement = snap.agreement
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


def wire_results_tab(lab: LabApp, tab: ResultsTab, shown: gr.Tab, others: list[gr.Tab]) -> None:
    """The tab shows the board's latest snapshot when it is selected, then asks every 15 s while it
    stays selected; an ask gets nothing back when the page already shows that snapshot. Its
    views (tables, figures) are made once per snapshot, whatever the number of pages."""
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
    shows = gr.State(None)  # the version of the snapshot this page shows
    timer = gr.Timer(15, active=False)
    views: dict[tuple, dict] = {}
    views_lock = threading.Lock()

    def view(snap: Snapshot) -> dict:
        with views_lock:
            if snap.version not in views:
                views.clear()
                # a figure goes to each page as JSON Gradio makes from it on every request (Plotly's
                # `to_json`, ~10 ms a figure): made here once per snapshot (Gradio passes it on as is)
                made = results_view(lab, tab, snap)
                views[snap.version] = {c: c.postprocess(v) if isinstance(c, gr.Plot) else v for c, v in made.items()}
            return views[snap.version]

    def on_results(showing, wait: float = 0.0):
        board = lab.study.results
        snap = board.latest()
        if snap is None and wait:
            snap = board.current(timeout=wait)
        if snap is None:
            return {tab.text: "The results are being computed; they appear here in a moment."}
        if snap.version == showing:
            return {c: gr.skip() for c in outputs}
        return {shows: snap.version, **ab_parts_as_now(view(snap))}

    def ab_parts_as_now(values: dict) -> dict:
        """The A/B parts shown or hidden as the models run now (one may have failed to load since
        the page was built); an update only when that differs from the layout."""
        ab = len(lab.working_models()) >= 2
        if ab == tab.ab_shown:
            return values
        parts = (tab.preference_plot, tab.preference, tab.mos)
        return values | {c: gr.update(value=values[c], visible=ab) for c in parts}

    def on_show(showing):
        # the first look at a freshly started app may wait a moment for the first snapshot
        return {timer: gr.Timer(active=True), **on_results(showing, wait=5.0)}

    def on_export(token_value, request: gr.Request):
        try:
            link = lab.study.export_link(token_value, client_of(lab, request))
        except Exception as exc:
            raise error(exc) from None
        return {tab.export_link: f"[Download ratings.csv]({link}) (streamed; the link works once, for 60 s)"}

    private = {"api_visibility": "private", "queue": False, "show_progress": "hidden"}
    shown.select(on_show, shows, [shows, timer, *outputs], **private)
    for other in others:
        other.select(lambda: gr.Timer(active=False), None, timer, **private)
    for trigger in (tab.refresh.click, timer.tick):
        trigger(on_results, shows, [shows, *outputs], **private)
    tab.export.click(on_export, tab.token, tab.export_link, api_visibility="private")
