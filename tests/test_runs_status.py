"""One line for scripts and faults with a way out (#23 items 2 and 4), as a user types them: `tuitune runs
status [RUN] [--json]` from inside a workspace, a stalled run (a real one paused with SIGSTOP, and one the
worker's watchdog marked), `runs follow | cat`, and a real tiny run whose loss goes NaN."""

from __future__ import annotations

import json
import math
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

from conftest import assert_one_line_error
from train_helpers import events, kill_group, make_workspace, state, wait_until, write_config

DATA = Path(__file__).resolve().parent / "data"
TUITUNE = str(Path(sys.executable).parent / "tuitune")  # the console script, as a user runs it


def tuitune(ws: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``tuitune ARGS`` run in the workspace folder ``ws``, with the paths relative to it."""
    return subprocess.run([TUITUNE, *args], cwd=ws, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def recorded(ws: Path, name: str, source: str = "train_run", **state_changes) -> Path:
    """A recorded run folder of tests/data copied into ``ws``'s runs/, its state.json changed as given."""
    run = ws / "runs" / name
    shutil.copytree(DATA / source, run)
    if state_changes:
        st = json.loads((run / "state.json").read_text())
        (run / "state.json").write_text(json.dumps({**st, **state_changes}))
    return run


def alive_here() -> dict:
    """State fields that make a run's worker look alive: this test's own process."""
    me = psutil.Process(os.getpid())
    return {"pid": me.pid, "pid_start": me.create_time(), "host": socket.gethostname()}


# --- runs status -----------------------------------------------------------------------------------

def test_status_of_the_recorded_runs_one_line_each_and_json(workspace):
    recorded(workspace, "tiny-demo")
    recorded(workspace, "grpo", "grpo_run")
    proc = tuitune(workspace, "runs", "status")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and proc.stderr == ""
    demo = next(line for line in lines if line.startswith("tiny-demo  "))
    assert demo.split("  ")[:4] == ["tiny-demo", "finished", "step 100/100", "loss 0.0728"]
    assert "eta -" in demo and "tok/s" in demo and "elapsed 3m37s" in demo and "peak -" in demo

    one = tuitune(workspace, "runs", "status", "tiny", "--json")
    assert one.returncode == 0, one.stderr
    got = json.loads(one.stdout)
    assert got["id"] == "tiny-demo" and got["status"] == "finished" and got["step"] == got["total_steps"] == 100
    assert got["loss"] == pytest.approx(0.07276, abs=1e-4) and got["eta"] is None and got["stalled_for"] is None
    assert got["tokens_per_s"] > 0 and got["tokens_per_s_recent"] is False and got["elapsed"] == pytest.approx(217.01)
    assert {"last_checkpoint", "peak_memory", "peak_memory_of", "gpus", "error", "path"} <= set(got)
    every = json.loads(tuitune(workspace, "runs", "status", "--json").stdout)
    assert [r["id"] for r in every] == ["grpo", "tiny-demo"]


def test_status_says_stalled_where_the_watchdog_marked_it(workspace):
    """The worker's watchdog (tuitune.train.watchdog) wrote stalled_since: status, list and --json say so."""
    since = time.time() - 700
    recorded(workspace, "hung", status="running", stalled_since=since, finished_at=None, **alive_here())
    line = tuitune(workspace, "runs", "status", "hung").stdout.strip()
    assert line.startswith("hung  stalled (no step for 11m4") and "eta -" in line, line
    got = json.loads(tuitune(workspace, "runs", "status", "hung", "--json").stdout)
    assert got["status"] == "stalled" and got["stalled_for"] == pytest.approx(700, abs=30)
    listed = tuitune(workspace, "runs", "list")
    assert "stalled 11m4" in listed.stdout and "runs stop hung --kill" in listed.stdout, listed.stdout
    assert json.loads(tuitune(workspace, "runs", "list", "--json").stdout)[0]["status"] == "stalled"


def test_a_quiet_run_whose_worker_runs_is_left_to_its_watchdog(workspace):
    """Its files are two weeks old, but its worker runs: only the watchdog, which sees every step (and a long
    evaluation), says a running worker is stalled."""
    recorded(workspace, "busy", status="running", finished_at=None, **alive_here())
    line = tuitune(workspace, "runs", "status", "busy").stdout
    assert line.startswith("busy  running  step 100/100"), line


def test_a_live_runs_status_has_its_gpus_utilisation_where_there_is_a_gpu(workspace):
    """This box has no GPU: the probe (NVML's reader, tuitune.gpus.GpuProbe) is given one, as the Train
    screen's tests give theirs; an ended run's line has none."""
    from tuitune.commands.runs import status_line
    from tuitune.gpus import GpuStat
    from tuitune.train.runfolder import RunFolder
    from tuitune.train.watch import run_status

    class OneGpu:
        def read(self):
            return [GpuStat(0, "NVIDIA H100 80GB HBM3", 20.5, 79.6, 87)]

    live = recorded(workspace, "live", status="running", finished_at=None, updated=time.time(), **alive_here())
    got = run_status(RunFolder(live), probe=OneGpu())
    assert got["gpus"] == [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "used_gib": 20.5, "total_gib": 79.6,
                            "util": 87}]
    assert status_line(got).endswith("  gpu 0: 87% 20.5/80 GiB")
    ended = run_status(RunFolder(recorded(workspace, "ended")), probe=OneGpu())
    assert ended["gpus"] is None and "gpu" not in status_line(ended)


def test_status_of_a_long_run_reads_its_tail_and_agrees_with_the_whole(workspace):
    """runs status reads the last 256 KB of events.jsonl (every figure it shows is the newest train event's);
    what it shows is what reading the whole file (runs compare's reader) gives; a tail without a train event
    (a long sample answer last) reads the whole file."""
    from tuitune.train.compare import figures, read_run
    from tuitune.train.runfolder import RunFolder
    from tuitune.train.watch import STATUS_TAIL, run_status

    run = workspace / "runs" / "long"
    run.mkdir(parents=True)
    (run / "state.json").write_text(json.dumps({"status": "finished", "created": 1.0, "step": 4000,
                                                "total_steps": 4000}))
    with open(run / "events.jsonl", "w", encoding="utf-8") as fh:
        for i in range(1, 4001):
            fh.write(json.dumps({"time": 1e9 + i, "type": "train", "step": i, "total_steps": 4000, "loss": 3 - i / 2000,
                                 "tokens": 500 * i, "tokens_per_s": 400.0 + i, "elapsed": 1.25 * i, "eta": 0}) + "\n")
    assert (run / "events.jsonl").stat().st_size > 2 * STATUS_TAIL
    whole = figures(read_run(RunFolder(run)))
    got = run_status(RunFolder(run))
    assert (got["step"], got["total_steps"], got["loss"], got["elapsed"]) == (4000, 4000, whole["loss"], 5000.0)
    assert got["tokens_per_s"] == whole["tokens_per_s"] == 400.0
    with open(run / "events.jsonl", "a", encoding="utf-8") as fh:  # a tail with no train event in it
        fh.write(json.dumps({"time": 2e9, "type": "sample", "step": 4000, "when": "after",
                             "answers": [{"prompt": "q", "answer": "x" * (STATUS_TAIL + 10)}]}) + "\n")
    assert run_status(RunFolder(run))["loss"] == whole["loss"]


def test_status_bad_input_is_one_line(workspace):
    empty = tuitune(workspace, "runs", "status")
    assert empty.returncode == 0 and empty.stdout.startswith("no runs yet"), empty
    assert json.loads(tuitune(workspace, "runs", "status", "--json").stdout) == []
    recorded(workspace, "tiny-demo")
    recorded(workspace, "tiny-grpo", "grpo_run")
    assert_one_line_error(tuitune(workspace, "runs", "status", "nope"), "no run 'nope'", "tiny-demo")
    assert_one_line_error(tuitune(workspace, "runs", "status", "tiny"), "matches several runs")
    bad = tuitune(workspace, "runs", "status", "--bogus")
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr and "Traceback" not in bad.stderr


def test_stall_default_is_the_configs():
    from tuitune.config.schema_notify import NotifyConfig
    from tuitune.train.watch import STALL_MINUTES

    assert NotifyConfig().stall_minutes == STALL_MINUTES


def test_status_imports_no_torch_and_is_quick(workspace):
    """`runs status` imports neither torch nor every verb's module (the bench times it: bench/startup.py)."""
    recorded(workspace, "tiny-demo")
    code = ("import sys, time; t = time.perf_counter(); from tuitune.cli import main; sys.argv = "
            "['tuitune', 'runs', 'status']; main(); heavy = [m for m in ('torch', 'transformers', 'pydantic', "
            "'tuitune.generation') if m in sys.modules]; print('HEAVY', heavy)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=workspace, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "HEAVY []", proc.stdout


# --- runs follow to a pipe -------------------------------------------------------------------------

def test_follow_to_a_pipe_escapes_what_would_break_a_line(workspace):
    run = recorded(workspace, "tiny-demo")
    answer = "line one\r\nline two\x1b[31m red\x1b[0m"
    with open(run / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"time": time.time(), "type": "sample", "step": 100, "when": "after",
                             "answers": [{"prompt": "who\nare you?", "answer": answer}]}) + "\n")
    proc = subprocess.run(f"{TUITUNE} runs follow tiny-demo | cat", shell=True, cwd=workspace,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "\r" not in out and "\x1b" not in out
    assert "  Q: who\\nare you?" in out.splitlines()
    assert "  A: line one\\r\\nline two\\x1b[31m red\\x1b[0m" in out.splitlines()
    steps = [line for line in out.splitlines() if line.startswith("step ") and "/100  loss " in line]
    assert len(steps) == len(events(run, "train"))


# --- a real tiny run whose loss goes NaN -----------------------------------------------------------

@pytest.fixture(scope="module")
def nan_run(tmp_path_factory, tiny_model):
    """A real run of the tiny model whose loss goes NaN: a learning rate near 1 with LoRA's updates scaled
    by alpha/r = 100000 (the gradients are NaN at step 2, the loss from step 3); a checkpoint each step."""
    ws = make_workspace(tmp_path_factory.mktemp("nan") / "ws", tiny_model)
    write_config(ws, "nan", **{"training.lr": 0.99, "lora.alpha": 100000, "lora.r": 1, "training.max_steps": 8,
                               "training.warmup_ratio": 0, "training.logging_steps": 1, "training.save_steps": 1,
                               "evaluation.prompts": []})
    proc = tuitune(ws, "train", "configs/nan.yaml", "--name", "nan", "--foreground", timeout=600)
    return ws, proc


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_with_one_line_and_keeps_the_finite_checkpoint(nan_run):
    from safetensors.torch import load_file

    ws, proc = nan_run
    run = ws / "runs" / "nan"
    st = state(run)
    assert proc.returncode == 2 and st["status"] == "failed", (proc.returncode, proc.stderr[-2000:])
    error = st["error"]
    assert error.startswith("the gradients were not finite at step 2 and the loss nan after it, 3 logged steps "
                            "in a row (the last finite loss 29.2100 at step 2): stopped at step 5, kept "
                            "checkpoint-1"), error
    assert "stopped at step 5" in error and "kept checkpoint-1" in error and "training.lr 0.99" in error
    assert "alpha/r = 100000" in error and "runs resume nan" in error and "\n" not in error
    losses = [e["loss"] for e in events(run, "train")]
    assert len(losses) == 5 and all(math.isnan(x) for x in losses[2:])  # logged as NaN, not 0.0
    assert [e["step"] for e in events(run, "lifecycle") if e["event"] == "save_skipped"] == [2, 3, 4, 5]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-1"]
    weights = load_file(run / "checkpoints" / "checkpoint-1" / "adapter_model.safetensors")
    assert weights and all(t.isfinite().all() for t in weights.values())

    line = tuitune(ws, "runs", "status", "nan").stdout.strip()
    assert line.startswith("nan  failed  step 5/8  loss nan  eta -") and "checkpoint checkpoint-1" in line, line
    assert " GiB RSS  error: the gradients were not finite" in line and "\n" not in line
    got = json.loads(tuitune(ws, "runs", "status", "nan", "--json").stdout)  # strict JSON: no bare NaN
    assert got["loss"] == "nan" and got["peak_memory_of"] == "RSS" and got["peak_memory"] > 50 * 2**20
    assert got["last_checkpoint"].endswith("checkpoint-1")

    follow = subprocess.run(f"{TUITUNE} runs follow nan | cat", shell=True, cwd=ws, capture_output=True,
                            text=True, timeout=60)
    assert follow.returncode == 0  # cat's status; runs follow's own is 1 for a failed run
    out = follow.stdout.splitlines()
    assert "\r" not in follow.stdout and "\x1b" not in follow.stdout
    assert [line.split("  ")[0:2] for line in out if line.startswith("step ") and "/8  loss" in line] == [
        ["step 1/8", "loss 7.8142"], ["step 2/8", "loss 29.2100"], ["step 3/8", "loss nan"],
        ["step 4/8", "loss nan"], ["step 5/8", "loss nan"]]
    assert "[save_skipped] step 2: the weights hold NaN or inf" in follow.stdout
    assert "run nan failed: the gradients were not finite" in follow.stderr


def test_the_guard_counts_logged_steps_and_names_a_logs_window(tmp_path):
    """The count behind the NaN stop (the real run above drives it through the worker): a log of several
    steps names its window, a finite loss starts the count again, 0 never stops."""
    from types import SimpleNamespace

    from tuitune.errors import TuituneError
    from tuitune.train.nonfinite import NonFiniteGuard
    from tuitune.train.runfolder import RunFolder

    cfg = SimpleNamespace(training=SimpleNamespace(max_nonfinite_steps=2, lr=0.01), method="lora",
                          lora=SimpleNamespace(alpha=16, r=16))
    args, run, guard = SimpleNamespace(fp16=False), RunFolder(tmp_path), NonFiniteGuard(cfg)
    guard.begin(args, 0)
    assert args.logging_nan_inf_filter is False  # the Trainer's filter would log a NaN step as 0.0
    # An evaluation keeps the filter (a batch without a label token is NaN there): on for it, off after.
    guard.step_end(None, args, SimpleNamespace(should_evaluate=True, should_save=False, should_log=False), None, 1)
    assert args.logging_nan_inf_filter is True
    guard.evaluated(args)
    assert args.logging_nan_inf_filter is False
    guard.check(run, args, 5, 2.0, 1.0)
    guard.check(run, args, 10, float("inf"), None)
    guard.check(run, args, 11, 1.5, 1.0)  # finite again: the count starts over
    guard.check(run, args, 12, float("inf"), None)
    with pytest.raises(TuituneError) as caught:
        guard.check(run, args, 13, float("inf"), None)
    assert str(caught.value) == (
        "the loss went inf at step 12, 2 logged steps in a row (the last finite loss 1.5000 at step 11): stopped "
        "at step 13, no checkpoint was saved before it. Usual causes: a learning rate too high (training.lr "
        "0.01); start a new run with a lower training.lr")
    window = NonFiniteGuard(cfg)
    window.begin(args, 0)
    window.check(run, args, 5, float("nan"), None)
    with pytest.raises(TuituneError, match=r"^the loss went nan in steps 1-5, 2 logged steps in a row: stopped at "):
        window.check(run, args, 6, float("nan"), None)
    cfg.training.max_nonfinite_steps = 0
    never = NonFiniteGuard(cfg)
    for step in range(1, 20):
        never.check(run, args, step, float("nan"), None)


@pytest.mark.slow
def test_resume_after_a_nan_stop_goes_on_from_the_finite_checkpoint_and_stops_again(nan_run):
    ws, _ = nan_run
    run = ws / "runs" / "nan"
    proc = tuitune(ws, "runs", "resume", "nan", "--foreground", timeout=600)
    resumed = [e for e in events(run, "lifecycle") if e["event"] == "resume"]
    assert resumed and resumed[-1]["checkpoint"].endswith("checkpoint-1")
    st = state(run)
    # The same settings diverge the same way: the guard ends it again rather than training on NaN.
    assert proc.returncode == 2 and st["status"] == "failed", proc.stderr[-2000:]
    assert "kept checkpoint-1" in st["error"] and "stopped at step 5" in st["error"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-1"]


# --- a real run paused with SIGSTOP ----------------------------------------------------------------

@pytest.mark.slow
def test_a_real_run_paused_with_sigstop_shows_stalled_then_finishes(tmp_path, tiny_model):
    """SIGSTOP freezes the worker's watchdog too, so this is the reader's judgement: a running run with no
    sign of life for notify.stall_minutes (here 0.02: 1.2 s) past its slowest interval between two logs."""
    ws = make_workspace(tmp_path / "ws", tiny_model)
    write_config(ws, "slow", **{"training.max_steps": 40, "training.logging_steps": 1, "training.save_steps": 20,
                                "evaluation.prompts": [], "notify.stall_minutes": 0.02})
    proc = tuitune(ws, "train", "configs/slow.yaml", "--name", "s1")
    assert proc.returncode == 0, proc.stderr
    run = ws / "runs" / "s1"
    pgid = None
    try:
        wait_until(lambda: (state(run).get("step") or 0) >= 2, what="step 2")
        pgid = state(run)["pgid"]
        os.killpg(pgid, signal.SIGSTOP)
        def stalled_line():
            out = tuitune(ws, "runs", "status", "s1").stdout
            return out if out.startswith("s1  stalled (no step for") else None

        line = wait_until(stalled_line, timeout=60, what="stalled")
        assert "step " in line and "/40" in line and "eta -" in line, line
        got = json.loads(tuitune(ws, "runs", "status", "s1", "--json").stdout)
        assert got["status"] == "stalled" and got["stalled_for"] > 1
        assert "stalled" in tuitune(ws, "runs", "list").stdout
        os.killpg(pgid, signal.SIGCONT)
        wait_until(lambda: state(run).get("status") == "finished", what="finished")
    finally:
        if pgid and state(run).get("status") != "finished":
            kill_group(pgid)
    done = tuitune(ws, "runs", "status", "s1").stdout
    assert done.startswith("s1  finished  step 40/40") and "checkpoint checkpoint-40" in done and " GiB RSS" in done


# --- the Train screen ------------------------------------------------------------------------------

async def test_the_train_screen_shows_a_stalled_run_in_its_table_and_dashboard(workspace):
    from test_train_screen import RUN_ID, first_lines, live_state, make_app, make_run, shown, text, until

    now = time.time()
    # A run caught mid-way, marked stalled as the worker's watchdog marks it.
    make_run(workspace, lines=first_lines(4), **live_state(), step=15, stalled_since=now - 700)
    app = make_app(workspace, now=now)
    async with app.run_test(size=(100, 32)) as pilot:
        await until(pilot, lambda: shown(app, RUN_ID), "the dashboard")
        await until(pilot, lambda: text(app, "#train-status").startswith("stalled 11m40s  step 15/100"),
                    "stalled in the dashboard's status line")
        table = app.screen.query_one("#train-runs")
        assert table.get_row_at(0)[1].plain == "stalled 11m40s"
