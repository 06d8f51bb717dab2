"""``tuitune runs delete RUN`` and ``tuitune runs resume RUN --checkpoint N`` from a shell."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import psutil
import pytest
from conftest import assert_one_line_error, run_cli
from train_helpers import events, make_workspace, state, write_config


def fake_run(ws: Path, run_id: str, status: str = "stopped", checkpoints=(), **extra) -> Path:
    run = ws / "runs" / run_id
    run.mkdir(parents=True)
    (run / "state.json").write_text(json.dumps({"status": status, "created": 1.0, "step": 0, **extra}))
    (run / "config.yaml").write_text("model: models/tiny-chat\n")
    for n in checkpoints:
        cp = run / "checkpoints" / f"checkpoint-{n}"
        cp.mkdir(parents=True)
        (cp / "trainer_state.json").write_text("{}")
    return run


def test_delete_removes_an_ended_run(workspace):
    run = fake_run(workspace, "old", status="finished", checkpoints=(2,))
    proc = run_cli("-w", workspace, "runs", "delete", "old")
    assert proc.returncode == 0, proc.stderr
    assert "deleted run old" in proc.stdout
    assert not run.exists() and not any((workspace / "runs").iterdir())
    assert_one_line_error(run_cli("-w", workspace, "runs", "delete", "old"), "no run 'old'")


def test_delete_refuses_a_running_run(workspace):
    me = psutil.Process(os.getpid())  # a live pid with its start time: the run looks alive
    run = fake_run(workspace, "live", status="running", pid=me.pid, pid_start=me.create_time(),
                   host=socket.gethostname())
    assert_one_line_error(run_cli("-w", workspace, "runs", "delete", "live"), "live", "running", "stop it first")
    assert (run / "state.json").exists()


def test_resume_names_the_checkpoints_when_the_one_asked_for_is_missing(workspace):
    run = fake_run(workspace, "r", checkpoints=(2, 4))
    assert_one_line_error(run_cli("-w", workspace, "runs", "resume", "r", "--checkpoint", "3"),
                          "checkpoint-3", "2, 4")
    assert state(run)["status"] == "stopped"


@pytest.mark.slow
def test_resume_from_an_earlier_checkpoint_continues_there(tmp_path, tiny_model):
    ws = make_workspace(tmp_path / "ws", tiny_model)
    cfg = write_config(ws, "quick", **{"training.max_steps": 4, "training.save_steps": 2,
                                       "training.logging_steps": 1, "evaluation.prompts": []})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "r1", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = ws / "runs" / "r1"
    before = state(run)
    assert before["step"] == 4 and before["elapsed"] > 0 and before["sec_per_step"] > 0
    # As if it had been stopped at step 4: resume from checkpoint-2 instead of the newest.
    st = dict(before, status="stopped")
    (run / "state.json").write_text(json.dumps(st))
    proc = run_cli("-w", ws, "runs", "resume", "r1", "--checkpoint", "2", "--foreground", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "from" in proc.stdout and "checkpoint-2" in proc.stdout
    resumed = [e for e in events(run, "lifecycle") if e["event"] == "resume"]
    assert resumed and resumed[-1]["checkpoint"].endswith("checkpoint-2")
    begins = [e for e in events(run, "lifecycle") if e["event"] == "train_begin"]
    assert begins[-1]["step"] == 2
    after = state(run)
    assert after["status"] == "finished" and after["step"] == 4
    assert after["elapsed"] > before["elapsed"]  # the clock went on, it did not restart
    # The later checkpoint of the first trajectory was moved aside, not deleted.
    superseded = Path(after["superseded"])
    assert (superseded / "checkpoint-4" / "trainer_state.json").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith(".")) == [
        "checkpoint-2", "checkpoint-4"]


def test_a_run_killed_after_saving_its_last_step_resumes_without_a_step_past_the_end(tmp_path, tiny_model):
    """Killed between its last checkpoint and its end, a run resumed from that checkpoint trained one
    step past max_steps (the Trainer's stop check follows a step): it ends from the checkpoint before."""
    ws = make_workspace(tmp_path / "ws", tiny_model)
    cfg = write_config(ws, "end", **{"training.max_steps": 4, "training.save_steps": 2, "training.logging_steps": 1,
                                     "training.save_total_limit": None, "evaluation.prompts": []})
    assert run_cli("-w", ws, "train", cfg, "--foreground", "--name", "end").returncode == 0
    run = ws / "runs" / "end"
    straight = {e["step"]: e["loss"] for e in events(run, "train")}
    # As kill -9 after checkpoint-4 was saved leaves it: no adapter, the worker gone.
    st = json.loads((run / "state.json").read_text())
    st.update(status="running", pid=None, pgid=None, updated=0)
    (run / "state.json").write_text(json.dumps(st))
    import shutil

    shutil.rmtree(run / "adapter")
    proc = run_cli("-w", ws, "runs", "resume", "end", "--foreground")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert state(run)["status"] == "finished" and (run / "adapter" / "adapter_config.json").is_file()
    steps = [e["step"] for e in events(run, "train")]
    assert max(steps) == 4, steps
    resumed = {e["step"]: e["loss"] for e in events(run, "train")}
    for step in (3, 4):
        assert resumed[step] == pytest.approx(straight[step], abs=1e-6)
    assert "resuming from checkpoint-2 to end it" in (run / "train.log").read_text()
