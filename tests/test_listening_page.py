"""A listener's work survives in the page: an app restart in mid-trial, a reload, the end of a session.
Debian's chromium on the real app (the conv1d demo model, 2-s trials); nothing touches the network."""

from __future__ import annotations

import socket
import time

import pytest

from tests.helpers import CHROMIUM, pass_headphone_check_in_page, serve_app
from webapp import lab as lab_module
from webapp.config import AppConfig
from webapp.service import ModelPool

pytestmark = pytest.mark.browser
LISTEN = "Listen and rate (blind)"


def launch(data_dir, port: int):
    """The app on `port` with its data in `data_dir` (a restart: the same port and folder)."""
    pool = ModelPool(["conv1d"], device="cpu", background=False)
    config = AppConfig(data_dir=data_dir, models=["conv1d"], trial_seconds=2.0, min_heard=0.5, session_trials=3)
    lab = lab_module.LabApp(config, pool=pool)
    demo, url = serve_app(lab, port=port)
    return lab, demo, url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state(page) -> dict:
    return page.locator(".lab-trial").evaluate("e => e.labPlayer.state()")


def listen_to_everything_and_rate(page, scores: dict[str, int]) -> None:
    from playwright.sync_api import expect

    expect(page.locator(".lab-trial .lab-play")).to_have_text("Play", timeout=30_000)  # decoded
    for key in ["reference", *scores]:
        page.locator(f".lab-switch[data-key='{key}']").click()
        page.wait_for_timeout(700)
    page.locator(".lab-play").click()  # pause
    for label, score in scores.items():
        page.get_by_label(f"score of {label}", exact=True).evaluate(
            "(e, v) => { e.value = v; e.dispatchEvent(new Event('input', {bubbles: true})); }", str(score)
        )


def test_a_reload_or_a_restart_in_mid_trial_loses_none_of_the_listening(tmp_path):
    """A listener in mid-trial reloads the page: it returns to the listening tab with the same trial,
    its heard times and its sliders (kept in the tab's sessionStorage). Then the app restarts under
    the open page: the answer sent to the new server goes through (the server takes the page's
    trial id where it is the listener's open trial)."""
    from playwright.sync_api import expect, sync_playwright

    port, data = free_port(), tmp_path / "data"
    lab, demo, url = launch(data, port)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"]
        )
        page = browser.new_page()
        try:
            page.goto(url)
            pass_headphone_check_in_page(page, lab.study.store.path)
            page.get_by_role("button", name="Start a blind trial").click()
            expect(page.get_by_text("Trial 1 of 3")).to_be_visible(timeout=60_000)
            trial = page.locator(".lab-trial").get_attribute("data-trial")
            scores = {"A": 73, "B": 50, "C": 12}  # B exactly where the slider starts: set all the same
            listen_to_everything_and_rate(page, scores)
            before = state(page)
            assert before["left"] == "" and min(before["heard"].values()) >= 0.5, before
            # a reload: back on the listening tab, the same trial, its listening and sliders
            page.reload()
            expect(page.get_by_text("(Your unanswered trial, shown again.)")).to_be_visible(timeout=60_000)
            expect(page.get_by_role("tab", name=LISTEN)).to_have_attribute("aria-selected", "true")
            assert page.locator(".lab-trial").get_attribute("data-trial") == trial
            expect(page.locator(".lab-trial .lab-play")).to_have_text("Play", timeout=30_000)
            after = state(page)
            assert after["left"] == "", after  # nothing to do again: every sample heard, every slider set
            assert all(after["heard"][k] >= before["heard"][k] - 0.6 for k in before["heard"]), (before, after)
            for label, score in scores.items():
                expect(page.locator(f".lab-value[data-key='{label}']")).to_contain_text(str(score))
            # a restart under the open page: the answer sent to the new server goes through
            demo.close()
            lab, demo, url = launch(data, port)  # the same port, data and work folders
            page.get_by_role("button", name="Submit ratings").click()
            expect(page.get_by_text("Saved (1 of 3)")).to_be_visible(timeout=10_000)
            rows = {r["condition"]: r["score"] for r in lab.study.store.rows() if r["trial"] == trial}
            conditions = lab.study.store.get_trial(trial).conditions
            assert rows == {conditions[label]: float(score) for label, score in scores.items()}
            # saved: the page keeps nothing of it, and a reload shows no trial again
            assert page.evaluate("() => sessionStorage.getItem('separation-lab-trial')") is None
        finally:
            browser.close()
            demo.close()


def test_the_session_complete_panel_stays_with_its_code_across_reloads(tmp_path):
    """The end of a session shows a panel with the completion code; a reload, or a later visit of
    the same browser, shows it again (the code is not only in a line that the next click clears)."""
    from playwright.sync_api import expect, sync_playwright

    lab, demo, url = launch(tmp_path / "data", free_port())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        try:
            page.goto(url)
            listener = pass_headphone_check_in_page(page, lab.study.store.path)
            expect(page.locator("#session-complete")).to_be_hidden()
            # a session's trials answered from the page (here written as the page's handler does)
            for _ in range(3):
                trial, _ = lab.study.trial_for(None, listener)
                time.sleep(trial.seconds)
                heard = dict.fromkeys([*trial.labels, "reference"], 1.0)
                scores = dict.fromkeys(trial.labels, 50)
                lab.study.answer(
                    listener, trial.trial_id, {"scores": scores, "heard": heard, "rated": trial.labels}, page=True
                )
            code = lab.study.completion_code(listener, 1)
            assert code not in page.content()
            for _ in range(2):
                page.reload()
                panel = page.locator("#session-complete")
                expect(panel).to_contain_text("Session 1 complete", timeout=30_000)
                expect(panel).to_contain_text(code)
        finally:
            browser.close()
            demo.close()


def test_the_trial_page_works_at_phone_width_and_holds_still_on_a_desktop(tmp_path):
    """At 390x844 (a phone) every tab is in sight, a trial's samples sit in one row under their
    scales, the transport stays in view and the help speaks of taps, not keys. On a desktop the
    sample columns never move as their "heard" counters fill up, and a slider reads as unrated
    until it is touched, even a click exactly where it starts."""
    from playwright.sync_api import expect, sync_playwright

    lab, demo, url = launch(tmp_path / "data", free_port())
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"]
        )
        try:
            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
            phone.goto(url)
            for name in ("Separate", LISTEN, "Results", "About"):
                expect(phone.get_by_role("tab", name=name)).to_be_visible(timeout=30_000)
            pass_headphone_check_in_page(phone, lab.study.store.path)
            phone.get_by_role("button", name="Start a blind trial").click()
            expect(phone.locator(".lab-trial .lab-play")).to_have_text("Play", timeout=60_000)
            rows = {round(c.bounding_box()["y"]) for c in phone.locator(".lab-cond").all()}
            assert len(rows) == 1, rows  # the reference and A, B, C side by side
            assert phone.locator(".lab-transport").evaluate("e => getComputedStyle(e).position") == "sticky"
            expect(phone.locator(".lab-keys")).to_be_hidden()
            expect(phone.locator(".lab-help")).to_contain_text("Tap a letter")

            desk = browser.new_context(viewport={"width": 1300, "height": 1000}).new_page()
            desk.goto(url)
            pass_headphone_check_in_page(desk, lab.study.store.path)
            desk.get_by_role("button", name="Start a blind trial").click()
            expect(desk.locator(".lab-trial .lab-play")).to_have_text("Play", timeout=60_000)

            def columns():
                return [round(b.bounding_box()["x"]) for b in desk.locator(".lab-switch").all()]

            before = columns()
            expect(desk.locator(".lab-score.lab-unrated")).to_have_count(3)  # every slider unrated
            for key in ("reference", "A", "B", "C"):
                desk.locator(f".lab-switch[data-key='{key}']").click()
                desk.wait_for_timeout(700)
            expect(desk.locator(".lab-heard").first).to_have_text("heard")
            assert columns() == before  # "0.3 of 0.5 s" became "heard": nothing moved
            # a click exactly at the slider's starting place is an answer too (no input event fires)
            slider = desk.get_by_label("score of B", exact=True)
            slider.evaluate("e => e.dispatchEvent(new PointerEvent('pointerup', {bubbles: true}))")
            expect(desk.locator(".lab-value[data-key='B']")).to_have_text("50 (Fair)")
            expect(desk.locator(".lab-score.lab-unrated")).to_have_count(2)
        finally:
            browser.close()
            demo.close()
