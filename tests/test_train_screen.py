"""The Train step, driven with Textual's Pilot on run folders written by hand (from a recorded run)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import widget_text

from screens.app import TuituneApp
from tuitune.doctor import Report

DATA = Path(__file__).parent / "data" / "train_run"
RUN_ID = "20261123-170741-tiny-demo"
CREATED = 1795453661.3363526   # the recorded run's start
NOW = 1795453900.5             # "now" for ages and ETAs: just after the recorded run finished


class NoGpu:
    def read(self):
        return None


def make_app(ws, now: float = NOW) -> TuituneApp:
    app = TuituneApp(ws, start="train", doctor=lambda ws: Report())
    app.clock = lambda: now
    app.gpu_probe = NoGpu()
    return app


def recorded_lines() -> list[str]:
    return [l for l in (DATA / "events.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]


def make_run(ws: Path, run_id: str = RUN_ID, *, lines: list[str] | None = None, created: float = CREATED,
             log: str | None = None, **state) -> Path:
    """A run folder as the worker leaves it: the recorded state, events and log, with ``state`` changes."""
    folder = Path(ws) / "runs" / run_id
    folder.mkdir(parents=True)
    st = json.loads((DATA / "state.json").read_text())
    st.update(created=created, name=run_id, **state)
    (folder / "state.json").write_text(json.dumps(st, indent=2))
    lines = recorded_lines() if lines is None else lines
    (folder / "events.jsonl").write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    if log is None:
        shutil.copy(DATA / "train.log", folder / "train.log")
    else:
        (folder / "train.log").write_text(log)
    return folder


def live_state(pid: int | None = None) -> dict:
    """State fields that make a run live: a running pid (this test process by default) and its start time."""
    proc = psutil.Process(pid or os.getpid())
    return dict(status="running", pid=proc.pid, pgid=proc.pid, pid_start=proc.create_time(),
                host=socket.gethostname(), error=None)


def first_lines(n_train: int) -> list[str]:
    """The recorded events up to the ``n_train``-th train event (a run caught mid-way)."""
    out, seen = [], 0
    for line in recorded_lines():
        if '"type": "train"' in line:
            if seen == n_train:
                break
            seen += 1
        out.append(line)
    return out


async def until(pilot, pred, what: str, timeout: float = 15.0):
    """Poll ``pred`` while the app runs, up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def text(app, selector: str) -> str:
    return widget_text(app.screen.query_one(selector))


def shown(app, run_id: str) -> bool:
    snap = getattr(app.screen, "snapshot", None)
    return snap is not None and snap.run_id == run_id


# --- reading runs ---------------------------------------------------------------------------------------

async def test_lists_runs_and_shows_the_selected_ones_dashboard(workspace):
    make_run(workspace)
    make_run(workspace, "older-run", created=CREATED - 7200, lines=first_lines(3), status="stopped", step=10,
             last_loss=4.0, log="=== start\nstopped at step 10\n")
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID), "the newest run's dashboard")
        table = app.screen.query_one("#train-runs")
        assert [k.value for k in table.rows] == [RUN_ID, "older-run"]
        assert [str(c) for c in table.get_row(RUN_ID)] == [RUN_ID, "finished", "100/100", "0.0728", "4m"]
        assert [str(c) for c in table.get_row("older-run")][1:] == ["stopped", "10/100", "4.0000", "2.1h"]
        assert "finished  step 100/100" in text(app, "#train-status")
        stats = text(app, "#train-stats")
        assert "loss 0.0728" in stats and "checkpoint-100" in stats and "no GPU" in stats
        assert "tok/s 263" in stats and "recent" not in stats  # the whole run's rate, not the last window's 380
        assert "ETA" not in stats  # a finished run has no time left
        chart = app.screen.query_one("#train-chart")
        await until(pilot, lambda: len(chart.points[0]) == 21, "the loss chart")
        assert chart.points[0][0] == (1, pytest.approx(7.8396, abs=1e-4))
        await pilot.press("a")
        samples = text(app, "#train-samples")
        assert "请介绍一下你自己" in samples and "我是Alice的小助手" in samples
        # The round's step is in its heading, once (not on every answer).
        assert "round 5 of 5: step 100, after" in samples and "(step 100, after)" not in samples
        await pilot.press("l")
        log = app.screen.query_one("#train-log")
        assert log.lines[-1] == "finished: /ws/runs/tiny-demo/adapter"
        # Down the table: the dashboard follows the cursor.
        table.focus()
        await pilot.press("down")
        await until(pilot, lambda: shown(app, "older-run"), "the older run's dashboard")
        assert "stopped  step 10/100" in text(app, "#train-status")
        await until(pilot, lambda: log.lines == ["=== start", "stopped at step 10"], "the older run's log")


async def test_a_growing_run_updates_the_dashboard(workspace):
    folder = make_run(workspace, lines=first_lines(4), **live_state(), step=15, last_loss=6.0)
    last_time = json.loads(first_lines(4)[-1])["time"]
    app = make_app(workspace, now=last_time + 10)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
        assert "running  step 15/100" in text(app, "#train-status")
        stats = text(app, "#train-stats")
        # ETA counts down from the last train event's estimate (10 s ago).
        first_eta = json.loads(first_lines(4)[-1])["eta"]
        assert f"ETA {int(first_eta - 10) // 60}m" in stats
        assert "No sample answers yet" not in text(app, "#train-samples")  # the "before" answers
        chart = app.screen.query_one("#train-chart")
        await until(pilot, lambda: len(chart.points[0]) == 4, "4 points")
        # The worker writes more: the dashboard follows without a key press.
        rest = recorded_lines()[len(first_lines(4)):]
        with open(folder / "events.jsonl", "a", encoding="utf-8") as fh:
            for line in rest[:-2]:
                fh.write(line + "\n")
            fh.write(rest[-2][:20])  # the final answers, still being written
        await until(pilot, lambda: app.screen.snapshot.step == 100, "step 100")
        await until(pilot, lambda: len(chart.points[0]) == 21, "21 points")
        assert app.screen.query_one("#train-progress").percentage == 1.0
        assert "checkpoint-100" in text(app, "#train-stats")
        with open(folder / "events.jsonl", "a", encoding="utf-8") as fh:
            fh.write(rest[-2][20:] + "\n")
        await until(pilot, lambda: [s.when for s in app.screen.snapshot.samples] == ["after", "after"],
                    "the final answers")


async def test_other_steps_pause_the_dashboard_and_can_hand_a_run_over(workspace):
    folder = make_run(workspace, lines=first_lines(4), **live_state(), step=15)
    make_run(workspace, "older-run", created=CREATED - 7200, lines=first_lines(3), status="stopped", step=10)
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
        assert getattr(app, "selected_run", None) is None  # moving the cursor hands nothing over
        train = app.screen
        await pilot.press("escape", "1")
        await until(pilot, lambda: app.current_mode == "env", "the Environment step")
        await until(pilot, lambda: not [w for w in train.workers if w.group == "train-follow" and w.is_running],
                    "the follower to stop while another step is shown")
        with open(folder / "events.jsonl", "a", encoding="utf-8") as fh:
            fh.write("".join(l + "\n" for l in recorded_lines()[len(first_lines(4)):]))
        await pilot.press("4")
        await until(pilot, lambda: shown(app, RUN_ID) and app.screen.snapshot.step == 100, "the run caught up")
        # Another step hands a run over: the dashboard shows it when Train is shown again.
        await pilot.press("1")
        app.selected_run = "older-run"
        await pilot.press("4")
        await until(pilot, lambda: shown(app, "older-run"), "the handed-over run")
        table = app.screen.query_one("#train-runs")
        assert table.cursor_row == 1
        # Taken once: back on the newest run, a trip to another step does not jump back.
        table.focus()
        await pilot.press("up")
        await until(pilot, lambda: shown(app, RUN_ID), "the newest run again")
        await pilot.press("escape", "1")
        listed = train.rows
        await pilot.press("4")
        await until(pilot, lambda: app.current_mode == "train" and train.rows is not listed, "a listing on return")
        await pilot.pause()
        assert train.run_id == RUN_ID


async def test_a_live_status_with_a_dead_worker_shows_failed(workspace):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    state = live_state(proc.pid)
    proc.wait()
    make_run(workspace, lines=first_lines(5), **state, step=20)
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
        table = app.screen.query_one("#train-runs")
        assert str(table.get_row(RUN_ID)[1]) == "failed"
        assert "failed" in text(app, "#train-status")
        assert "the worker died without writing its end" in text(app, "#train-error")


async def test_a_big_run_opens_and_stays_small(workspace):
    """100k events: the dashboard ends on the newest step with a bounded chart, redrawn at most 2/s."""
    from test_dashboard import synthetic_lines

    make_run(workspace, lines=list(synthetic_lines(100_000)), total_steps=100_000, step=100_000)
    app = make_app(workspace)
    t0 = time.monotonic()
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID) and app.screen.snapshot.step == 100_000, "the last step",
                    timeout=60)
        chart = app.screen.query_one("#train-chart")
        # Under a loaded suite (the real model trains on the other worker) the parse takes longer.
        # Drawn, not only given: the throttled redraw may still be waiting on its timer.
        await until(pilot, lambda: chart.points[0] and chart.points[0][-1][0] == 100_000 and chart.up_to_date,
                    "the chart's last point drawn", timeout=60)
        elapsed = time.monotonic() - t0
        assert len(chart.points[0]) <= 2000
        assert 1 <= chart.draws <= elapsed / chart.MIN_INTERVAL + 1
        assert "best 0.0100 @ 61803" in chart._title


# --- controlling runs -----------------------------------------------------------------------------------

async def test_stop_and_save_keys_ask_a_live_run(workspace):
    folder = make_run(workspace, lines=first_lines(5), **live_state(), step=20)
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
        await pilot.press("w")
        await until(pilot, lambda: (folder / "control" / "save").exists(), "control/save")
        await until(pilot, lambda: "save a checkpoint" in text(app, "#train-message"), "the save message")
        await pilot.press("s")
        await until(pilot, lambda: (folder / "control" / "stop").exists(), "control/stop")
        await until(pilot, lambda: "asked run" in text(app, "#train-message") and "stop" in text(app, "#train-message"),
                    "the stop message")


async def test_engine_errors_show_in_place(workspace):
    make_run(workspace)
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
        await pilot.press("r")
        await until(pilot, lambda: "finished; start a new run" in text(app, "#train-message"), "the resume error")
        assert len(text(app, "#train-message").strip().splitlines()) == 1
        await pilot.press("s")
        await until(pilot, lambda: "is not running (it is finished)" in text(app, "#train-message"),
                    "the stop error")
        app.screen.query_one("#train-message").update("")
        await pilot.press("K")  # nothing to kill: said at once, no question asked
        await until(pilot, lambda: "is not running (it is finished)" in text(app, "#train-message"),
                    "the kill error")
        assert app.screen.query_one("#train-runs") is not None  # still the Train screen, no dialog
        assert app.is_running and app.screen.query_one("#train-runs").row_count == 1


async def test_kill_asks_first_and_ends_the_process_group(workspace):
    sleeper = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        folder = make_run(workspace, lines=first_lines(5), **live_state(sleeper.pid), step=20)
        app = make_app(workspace)
        async with app.run_test(size=(100, 32)) as pilot:
            await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
            await pilot.press("K")
            await pilot.pause()
            assert "Kill run" in text(app, "#train-confirm-question")
            await pilot.press("n")
            await until(pilot, lambda: "left running" in text(app, "#train-message"), "no kill")
            assert sleeper.poll() is None
            await pilot.press("S")
            await pilot.pause()
            await pilot.press("y")
            await until(pilot, lambda: sleeper.poll() is not None, "the process to end")
            assert sleeper.returncode == -signal.SIGKILL
            await until(pilot, lambda: "killed run" in text(app, "#train-message"), "the kill message")
            await until(pilot, lambda: str(app.screen.query_one("#train-runs").get_row(RUN_ID)[1]) == "stopped",
                        "status stopped")
            assert json.loads((folder / "state.json").read_text())["status"] == "stopped"
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_quitting_leaves_a_run_running(workspace):
    sleeper = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        make_run(workspace, lines=first_lines(5), **live_state(sleeper.pid), step=20)
        app = make_app(workspace)
        async with app.run_test(size=(100, 32)) as pilot:
            await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
            await pilot.press("q")
            await pilot.pause()
        assert not app.is_running
        assert sleeper.poll() is None
        # Reopened, it is shown where it is, from its files.
        app = make_app(workspace)
        async with app.run_test(size=(100, 32)) as pilot:
            await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
            assert "running  step 20/100" in text(app, "#train-status")
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_no_runs_says_how_to_start_one(workspace):
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert "No runs yet" in text(app, "#train-status") and "Press n" in text(app, "#train-stats")
        await pilot.press("s")
        await until(pilot, lambda: "No run selected" in text(app, "#train-message"), "the hint")


async def test_merge_and_chat_keys_appear_only_with_those_steps(workspace):
    from textual.screen import Screen

    from tuitune.steps import STEPS
    from screens.train import TrainScreen

    keys = {s.key for s in STEPS}
    bound = {b.key for b in TrainScreen.BINDINGS}
    assert ("m" in bound) == ("merge" in keys) and ("c" in bound) == ("chat" in keys)
    make_run(workspace)
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
        if "merge" in keys:
            await pilot.press("m")
        else:  # not built yet: a stand-in step shows the handover works all the same
            app.add_mode("merge", Screen)
            app.screen.action_open_in("merge")
        await until(pilot, lambda: app.current_mode == "merge", "the Merge step")
        assert app.selected_run == RUN_ID


# --- starting a run -------------------------------------------------------------------------------------

async def test_n_starts_a_run_from_a_saved_config(tmp_path, tiny_model):
    from train_helpers import kill_group, make_workspace, state, write_config

    ws = make_workspace(tmp_path / "ws", tiny_model)
    write_config(ws, "quick", **{"training.max_steps": 3, "evaluation.prompts": []})
    (ws / "configs" / "broken.yaml").write_text("model: models/tiny-chat\ntraining:\n  lr: -1\n")
    app = make_app(ws)
    try:
        async with app.run_test(size=(100, 32)) as pilot:
            await app.workers.wait_for_complete()
            await pilot.press("n")
            await pilot.pause()
            configs = app.screen.query_one("#train-new-configs")
            assert [configs.get_option_at_index(i).prompt for i in range(configs.option_count)] == [
                "broken.yaml", "quick.yaml"]
            # A config the engine refuses: one line, in place, and the dialog stays.
            await pilot.press("enter")
            await until(pilot, lambda: "broken.yaml" in widget_text(app.screen.query_one("#train-new-error")),
                        "the config error")
            assert len(widget_text(app.screen.query_one("#train-new-error"), width=1000).strip().splitlines()) == 1
            assert "training.lr" in widget_text(app.screen.query_one("#train-new-error"))
            assert not any((ws / "runs").iterdir())
            await pilot.press("down", "enter")
            await until(pilot, lambda: any((ws / "runs").iterdir()), "a run folder")
            run = next((ws / "runs").iterdir())
            await until(pilot, lambda: shown(app, run.name), "the new run's dashboard")
            assert state(run).get("pgid")
            assert run.name.endswith("-quick") and (run / "config.yaml").exists()
            assert f"started run {run.name}" in text(app, "#train-message")
            assert run.name in [k.value for k in app.screen.query_one("#train-runs").rows]
    finally:
        # The run is a detached process: end it, whatever the test got to.
        for folder in (ws / "runs").iterdir():
            if (folder / "state.json").exists() and state(folder).get("pgid"):
                kill_group(state(folder)["pgid"])


def test_run_updates_coalesce_per_run_only():
    """A newer snapshot of the same run supersedes a queued one; another run's never does."""
    from screens.train import TrainScreen
    from tuitune.train.runview import RunView

    a1, a2, b = (TrainScreen.RunUpdated(RunView(r).snapshot()) for r in ("a", "a", "b"))
    assert a1.can_replace(a2) and not a1.can_replace(b) and not b.can_replace(a1)
    listed = TrainScreen.RunsListed([])
    assert listed.can_replace(TrainScreen.RunsListed([])) and not a1.can_replace(listed)


# --- issue 12: names, resume points, deletes, the chart's scale, sample history, whole messages ------------

async def test_a_cancelled_kill_says_left_running_only_while_it_runs(workspace):
    sleeper = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        folder = make_run(workspace, lines=first_lines(5), **live_state(sleeper.pid), step=20)
        app = make_app(workspace)
        async with app.run_test(size=(100, 32)) as pilot:
            await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
            await pilot.press("K")
            await pilot.pause()
            await pilot.press("n")
            await until(pilot, lambda: "left running" in text(app, "#train-message"), "no kill")
            # The run ends on its own: "left running" no longer holds.
            st = json.loads((folder / "state.json").read_text())
            st.update(status="finished")
            (folder / "state.json").write_text(json.dumps(st))
            await until(pilot, lambda: app.screen.snapshot.status == "finished", "the run's end")
            await until(pilot, lambda: "left running" not in text(app, "#train-message"), "the stale message to go")
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_v_switches_the_loss_chart_to_a_log_scale(workspace):
    make_run(workspace)
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
        chart = app.screen.query_one("#train-chart")
        assert chart.scale_shown == "linear"
        await pilot.press("v")
        await pilot.pause()
        assert chart.log_scale and chart.scale_shown == "log"
        await pilot.press("v")
        await pilot.pause()
        assert not chart.log_scale and chart.scale_shown == "linear"


async def test_sample_answers_of_every_round_can_be_browsed(workspace):
    make_run(workspace)
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
        await pilot.press("a")
        await pilot.pause()
        assert "round 5 of 5: step 100, after" in text(app, "#train-samples")
        await pilot.press("left_square_bracket", "left_square_bracket")
        await pilot.pause()
        assert "round 3 of 5: step 50, during" in text(app, "#train-samples")
        for _ in range(5):
            await pilot.press("left_square_bracket")
        await pilot.pause()
        assert "round 1 of 5: step 0, before" in text(app, "#train-samples")
        for _ in range(6):
            await pilot.press("right_square_bracket")
        await pilot.pause()
        assert "round 5 of 5" in text(app, "#train-samples")


async def test_resume_lets_the_user_pick_a_checkpoint(workspace, monkeypatch):
    folder = make_run(workspace, status="stopped", step=75)
    for n in (25, 50, 75):
        cp = folder / "checkpoints" / f"checkpoint-{n}"
        cp.mkdir(parents=True)
        (cp / "trainer_state.json").write_text("{}")
    calls = []

    def fake_resume(ws, run_id, foreground=False, checkpoint=None):
        from tuitune.train.runfolder import RunFolder

        calls.append((run_id, checkpoint))
        run = RunFolder(folder)
        run.write_state(resumed_from=str(folder / "checkpoints" / f"checkpoint-{checkpoint}"))
        return run, 4242

    monkeypatch.setattr("tuitune.train.launcher.resume_run", fake_resume)
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
        await pilot.press("r")
        await pilot.pause()
        lst = app.screen.query_one("#train-resume-checkpoints")
        assert [str(lst.get_option_at_index(i).prompt) for i in range(lst.option_count)] == [
            "checkpoint-75  (newest)", "checkpoint-50", "checkpoint-25"]
        await pilot.press("escape")
        await until(pilot, lambda: "not resumed" in text(app, "#train-message"), "the cancel")
        assert not calls
        await pilot.press("r")
        await pilot.pause()
        await pilot.press("down", "enter")
        await until(pilot, lambda: calls, "the resume")
        assert calls == [(RUN_ID, 50)]
        await until(pilot, lambda: "from checkpoint-50" in text(app, "#train-message"), "the resume message")


async def test_delete_asks_first_and_never_takes_a_running_run(workspace):
    sleeper = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        live = make_run(workspace, "live-run", lines=first_lines(5), created=CREATED + 10,
                        **live_state(sleeper.pid), step=20)
        done = make_run(workspace)
        app = make_app(workspace)
        async with app.run_test(size=(100, 32)) as pilot:
            await until(pilot, lambda: shown(app, "live-run"), "the live run's dashboard")
            await pilot.press("d")
            await until(pilot, lambda: "stop it first" in text(app, "#train-message"), "the refusal")
            assert live.exists() and type(app.screen).__name__ == "TrainScreen"
            app.screen.query_one("#train-runs").focus()
            await pilot.press("down")
            await until(pilot, lambda: shown(app, RUN_ID), "the finished run's dashboard")
            await pilot.press("d")
            await pilot.pause()
            assert "Delete run" in text(app, "#train-confirm-question")
            await pilot.press("n")
            await until(pilot, lambda: "kept" in text(app, "#train-message"), "kept")
            assert done.exists()
            await pilot.press("d")
            await pilot.pause()
            await pilot.press("y")
            await until(pilot, lambda: not done.exists(), "the folder to go")
            await until(pilot, lambda: app.screen.query_one("#train-runs").row_count == 1, "the table")
            assert f"deleted run {RUN_ID}" in text(app, "#train-message")
            assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_the_new_run_dialog_takes_a_run_name(workspace, monkeypatch):
    (workspace / "configs" / "quick.yaml").write_text("model: models/tiny-chat\n")
    started = []

    def fake_start(config, ws, name=None, foreground=False):
        started.append((Path(config).name, name))
        raise __import__("tuitune.errors", fromlist=["TuituneError"]).TuituneError(
            f"run {name} already exists (stopped); pick another --name")

    monkeypatch.setattr("tuitune.train.launcher.start_run", fake_start)
    app = make_app(workspace)
    async with app.run_test(size=(100, 32)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("n")
        await pilot.pause()
        app.screen.query_one("#train-new-name").focus()
        await pilot.press(*"my-run", "enter")
        await until(pilot, lambda: started, "the start")
        assert started == [("quick.yaml", "my-run")]
        await until(pilot, lambda: "my-run" in widget_text(app.screen.query_one("#train-new-error")), "the error")
        # Empty name: the default id.
        app.screen.query_one("#train-new-name").value = ""
        app.screen.query_one("#train-new-configs").focus()
        await pilot.press("enter")
        await until(pilot, lambda: len(started) == 2, "the second start")
        assert started[1] == ("quick.yaml", None)


async def test_at_80x24_a_long_error_and_message_are_shown_whole(workspace):
    from test_merge_screen import assert_shown_whole

    long_error = ("the worker died without writing its end (killed, out of memory or a reboot); last log lines: "
                  "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total capacity; "
                  "21.10 GiB already allocated) | see train.log for the rest")
    make_run(workspace, status="failed", error=long_error)
    app = make_app(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
        await pilot.pause()
        assert_shown_whole(app.screen, app.screen.query_one("#train-error"), long_error)
        await pilot.press("s")
        await until(pilot, lambda: "is not running" in text(app, "#train-message"), "the stop error")
        await pilot.pause()
        assert_shown_whole(app.screen, app.screen.query_one("#train-message"))


async def test_at_80x24_a_long_run_name_wraps_in_the_runs_table(workspace):
    from test_merge_screen import visible_lines

    name = "medqa-qwen2.5-7b-lora-r64-lr2e-4-maxlen2048-try3"
    make_run(workspace, name)
    app = make_app(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: shown(app, name), "the dashboard")
        await pilot.pause()
        lines = visible_lines(app.screen, app.screen.query_one("#train-runs"))
        assert name in "".join("".join(line.split()[:1]) for line in lines[1:]), lines
