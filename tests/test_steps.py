"""The step registry and its hand-overs (#21 item 2): an 8th step is a row and a screen."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tuitune.steps import KINDS, STEPS, Handover, handover_problems, step


def test_every_hand_over_names_a_step_that_takes_its_kind():
    assert handover_problems() == []
    assert {g.kind for s in STEPS for g in s.gives} <= set(KINDS)
    assert [g.key for g in step("train").gives] == ["m", "c"]


def test_a_wrong_row_is_named(monkeypatch):
    import tuitune.steps as reg

    bad = reg.Step("probe", "Probe", "8", "p", "probe:P", (), gives=(reg.Give("t", "env", "Env", "run"),
                                                                     reg.Give("t", "nowhere", "X", "cake")))
    monkeypatch.setattr(reg, "STEPS", (*reg.STEPS, bad))
    assert handover_problems() == ["probe hands a run to env, which does not take one",
                                   "probe gives an unknown kind 'cake'",
                                   "probe hands over to 'nowhere', which is not a step", "probe has the key 't' twice"]


async def test_the_app_keeps_one_handover_and_each_step_takes_it_once(workspace):
    from screens.app import TuituneApp
    from tuitune.doctor import Report

    app = TuituneApp(workspace, start="env", doctor=lambda ws: Report())
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        assert app.handover is None and app.selected_run is None
        app.selected_run = "r1"
        assert app.handover == Handover("run", "r1", 1) and app.selected_model is None
        first = app.hand_over("model", "models/m")
        assert first.seq == 2 and app.selected_model == "models/m" and app.selected_run is None
        await pilot.press("4")
        await pilot.pause()
        train = app.screen
        assert train.take_handover() is None  # a model: Train takes runs only
        app.hand_over("run", "r2")
        assert train.take_handover().value == "r2" and train.take_handover() is None  # once


# The 8th step, as a person adds one: a row in the registry and a screen module. The app is
# built from the registry when screens.app is imported, so the row goes in before that, in a
# fresh interpreter.
PROBE_SCREEN = '''
from textual.widgets import Static

from screens.base import StepScreen


class ProbeScreen(StepScreen):
    STEP = "probe"
    HELP = "# Probe"

    def __init__(self):
        super().__init__()
        self.taken = []

    def compose_body(self):
        yield Static("nothing yet", id="probe-model")

    def on_screen_resume(self):
        if handed := self.take_handover():
            self.taken.append(handed.value)
            self.query_one("#probe-model", Static).update(handed.value)

    def handover_value(self, kind):
        return "probe-run"
'''

EIGHTH_STEP = '''
import asyncio, sys

sys.path.insert(0, {tmp!r})
import tuitune.steps as reg

reg.STEPS = (*reg.STEPS, reg.Step("probe", "Probe", "8", "Probe a model", "probe_screen:ProbeScreen", (),
                                  gives=(reg.Give("t", "train", "To Train", "run"),), takes=("model",)))
assert not reg.handover_problems()

from screens.app import TuituneApp
from tuitune.doctor import Report


async def main():
    app = TuituneApp({ws!r}, start="env", doctor=lambda ws: Report())
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Go to Probe" in titles and "Probe: To Train" in titles, titles
        assert "8 Probe" in str(app.screen.query_one("#stepnav").render())
        app.hand_over("model", "models/m")
        await pilot.press("8")
        await pilot.pause()
        probe = app.screen
        assert app.current_mode == "probe" and probe.taken == ["models/m"], (app.current_mode, probe.taken)
        keys = {{k: a.binding.description for k, a in probe.active_bindings.items() if a.binding.show}}
        assert keys.get("t") == "To Train", keys
        await pilot.press("t")   # hands its run to Train, which takes runs
        await pilot.pause()
        assert app.current_mode == "train" and app.selected_run == "probe-run", app.current_mode
        await pilot.press("8")   # the model was taken once; its own run is not taken back
        await pilot.pause()
        assert probe.taken == ["models/m"], probe.taken
    print("OK")


asyncio.run(main())
'''


def test_an_eighth_step_is_a_row_and_a_screen(tmp_path, workspace):
    (tmp_path / "probe_screen.py").write_text(textwrap.dedent(PROBE_SCREEN))
    code = EIGHTH_STEP.format(tmp=str(tmp_path), ws=str(workspace))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-3000:]
