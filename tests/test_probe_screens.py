"""The screens' side of #23 section 1 (the probe on the Config, Train and Environment steps), the Train
footer with a GRPO run selected at 80 columns, and the Config form's one-URL-a-line notify.urls."""

from __future__ import annotations

import shutil
from pathlib import Path

from test_app import footer_labels
from test_grpo_watch import DATA as GRPO_DATA, GRPO_ID, GRPO_NOW
from test_train_screen import make_app as train_app, make_run

from tests.test_config import demo_ws  # noqa: F401 - a fixture


async def until(pilot, ok, what: str, tries: int = 400):
    for _ in range(tries):
        if ok():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- the Train footer with a GRPO run at 80 columns ------------------------------------------------

async def test_train_footer_with_a_grpo_run_reads_whole_at_80x24(workspace):
    folder = make_run(workspace, GRPO_ID, created=1796659399.37, log=(GRPO_DATA / "train.log").read_text())
    for name in ("events.jsonl", "state.json"):
        shutil.copy(GRPO_DATA / name, folder / name)
    app = train_app(workspace, now=GRPO_NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.snapshot is not None and screen.snapshot.has_reward, "the GRPO run")
        screen.set_focus(None)
        screen.refresh_bindings()
        await pilot.pause()
        for _ in range(100):
            labels, cut = footer_labels(screen)
            if "m Merge" in labels and "f1 Help" in labels and not cut:
                break
            await pilot.pause(0.05)
        assert not cut, (labels, cut)
        assert "q Quit" in labels and "f1 Help" in labels, labels


# --- notify.urls on the Config form: one URL a line ----------------------------------------------

async def test_notify_urls_are_one_a_line_and_a_comma_stays_in_its_url(demo_ws):
    from textual.widgets import TextArea

    from test_config_screen import make_app as config_app, settle

    from tuitune.config import load_config

    app = config_app(demo_ws)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        area = screen.query_one("#f-notify-urls")
        assert isinstance(area, TextArea)
        urls = ["json://127.0.0.1:8123/hook?tags=a,b", "ntfy://ntfy.sh/tuitune-topic"]
        area.text = "\n".join(urls)
        await settle(app, pilot)
        assert screen.cfg is not None and screen.cfg.notify.urls == urls
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert load_config(demo_ws / "configs" / "tiny-demo.yaml").notify.urls == urls
        screen.load_source(f"file:{demo_ws / 'configs' / 'tiny-demo.yaml'}")
        await settle(app, pilot)
        assert screen.query_one("#f-notify-urls", TextArea).text == "\n".join(urls)
