"""#20 item 16: on a CPU-only machine, a training worker, chat or eval takes the cores that other tuitune
processes do not hold (tuitune.cores): the sizing from claims and run folders, and a real worker and
chat beside a busy claim."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import run_cli
from train_helpers import make_workspace, state, write_config

from tuitune import cores
from tuitune.cores import Holder, Registry, Share, cpu_cores, describe, plan, user_threads


@pytest.fixture
def child():
    """A live process that is not this one (sleeping: idle), ended after the test."""
    procs = []

    def start(code: str = "import time; time.sleep(600)") -> psutil.Process:
        p = subprocess.Popen([sys.executable, "-c", code])
        procs.append(p)
        return psutil.Process(p.pid)

    yield start
    for p in procs:
        p.kill()
        p.wait()


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def write_claim(folder: Path, pid: int, threads: int, what: str, start: float | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{pid}.json"
    start = psutil.Process(pid).create_time() if start is None else start
    path.write_text(json.dumps({"pid": pid, "start": start, "threads": threads, "what": what}))
    return path


def fake_run(ws: Path, run_id: str, status: str = "running", **st) -> Path:
    """A run folder's state.json as the launcher and worker write it."""
    folder = ws / "runs" / run_id
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"status": status, "created": time.time(),
                                                   "host": socket.gethostname(), **st}))
    return folder


def live(proc: psutil.Process) -> dict:
    return {"pid": proc.pid, "worker_pid": proc.pid, "pid_start": proc.create_time()}


# --- the sizing ---------------------------------------------------------------------------------------

def test_the_first_takes_every_core_a_later_one_what_is_left_or_its_share():
    assert plan(2, []) == 2
    assert plan(2, [Holder("run a", 1, 2)]) == 1  # its fair share: the first gives back what is over its own
    assert plan(2, [Holder("run a", 1, 1)]) == 1
    assert plan(16, [Holder("run a", 1, 4)]) == 12
    assert plan(16, [Holder("run a", 1, 16)]) == 8
    assert plan(2, [Holder("run a", 1, 1), Holder("chat", 2, 1)]) == 1  # never fewer than 1
    assert plan(1, [Holder("run a", 1, 1)]) == 1
    assert plan(2, [Holder("chat", 2, 2, idle=True)]) == 2  # an idle holder is not counted
    assert describe(1, 2, [Holder("run a", 1, 1), Holder("the tuitune app (pid 2)", 2, 2, idle=True)]) == \
        "using 1 of 2 CPU threads: run a holds 1, the tuitune app (pid 2) holds 2 but is idle"
    assert describe(2, 2, []) == "using 2 of 2 CPU threads: no other tuitune process is using the CPU"


def test_claims_of_live_processes_count_dead_and_recycled_ones_are_removed(tmp_path, child):
    folder = tmp_path / "cores"
    sleeper = child()
    write_claim(folder, sleeper.pid, 1, "tuitune chat (pid x)")
    gone = write_claim(folder, dead_pid(), 2, "killed run", start=1.0)
    recycled = write_claim(folder, child().pid, 2, "an older process with this pid", start=12345.0)
    write_claim(folder, os.getpid(), 2, "this process")  # its own claim is not another's
    with Registry(folder) as reg:
        assert reg.holders() == [Holder("tuitune chat (pid x)", sleeper.pid, 1)]
    assert not gone.exists() and not recycled.exists()


def test_live_runs_of_the_workspace_count_once_dead_ones_not(tmp_path, child):
    ws, folder = tmp_path / "ws", tmp_path / "cores"
    a, b, c = child(), child(), child()
    fake_run(ws, "claimed", threads=1, **live(a))
    write_claim(folder, a.pid, 1, "run claimed")  # its worker's claim: counted once
    fake_run(ws, "older-worker", **live(b))  # no claim, no threads recorded: torch's default, every core
    fake_run(ws, "one-thread", threads=1, **live(c))
    fake_run(ws, "died", threads=2, pid=dead_pid(), pid_start=1.0)  # state says running, the worker is gone
    fake_run(ws, "finished", status="finished", threads=2, **live(child()))
    fake_run(ws, "elsewhere", threads=2, **{**live(child()), "host": "another-host"})
    fake_run(ws, "me", threads=2, pid=os.getpid(), pid_start=psutil.Process().create_time())
    with Registry(folder, workspace=ws) as reg:
        held = {h.what: h.threads for h in reg.holders()}
    assert held == {"run claimed": 1, "run older-worker": cpu_cores(), "run one-thread": 1}


def test_a_users_thread_count_is_kept():
    assert user_threads({"OMP_NUM_THREADS": "3"}) == ("OMP_NUM_THREADS", 3)
    assert user_threads({"MKL_NUM_THREADS": "2"}) == ("MKL_NUM_THREADS", 2)
    # tuitune's own count, inherited by a child process (a worker the app started), is not the user's.
    assert user_threads({"OMP_NUM_THREADS": "1", cores.SIZED_ENV: "1"}) is None
    assert user_threads({"OMP_NUM_THREADS": "zero"}) is None and user_threads({}) is None


def test_share_cores_with_a_users_count_a_gpu_and_a_claim_beside(tmp_path, child, monkeypatch):
    folder, lines, set_to = tmp_path / "cores", [], []
    monkeypatch.setattr(cores, "_current", None)
    monkeypatch.setattr(cores, "_has_gpu", lambda: False)
    monkeypatch.setattr(cores, "cpu_cores", lambda: 4)
    monkeypatch.setattr(cores, "set_threads", lambda n, first=False: set_to.append(n))
    monkeypatch.setattr(cores.atexit, "register", lambda fn: None)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    share = cores.share_cores("run mine", log=lines.append, folder=folder)
    assert share.threads == 3 and set_to == [] and share.rebalance(force=True) is None
    assert lines == ["using 3 CPU threads: OMP_NUM_THREADS=3 is set, and kept (without it the 4 cores are shared "
                     "with other tuitune processes)"]
    assert json.loads((folder / f"{os.getpid()}.json").read_text())["threads"] == 3  # others count it
    share.release()

    monkeypatch.setattr(cores, "_current", None)
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(cores, "_has_gpu", lambda: True)
    assert cores.share_cores("run mine", log=lines.append, folder=folder) is None  # a GPU box: as it was
    assert len(lines) == 1 and not (folder / f"{os.getpid()}.json").exists()

    monkeypatch.setattr(cores, "_has_gpu", lambda: False)
    spinner = child("while True: pass")
    write_claim(folder, spinner.pid, 3, "run busy")
    share = cores.share_cores("run mine", log=lines.append, folder=folder)
    assert (share.threads, set_to) == (2, [2])  # its fair share of 4 beside a busy process holding 3
    assert lines[-1] == "using 2 of 4 CPU threads: run busy holds 3"
    share.release()


def test_an_unwritable_claims_folder_leaves_the_threads_as_they_are(tmp_path, monkeypatch):
    lines = []
    monkeypatch.setattr(cores, "_current", None)
    monkeypatch.setattr(cores, "_has_gpu", lambda: False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cores.share_cores("run mine", log=lines.append, folder=blocker / "cores") is None
    assert lines[0].startswith("note: CPU threads not shared with other tuitune processes (")
    assert lines[0].endswith(f"set {cores.CORES_DIR_ENV} to a writable folder)")


def test_a_worker_gives_back_and_takes_back_cores_as_others_come_and_go(tmp_path, child, monkeypatch):
    folder, lines, set_to = tmp_path / "cores", [], []
    monkeypatch.setattr(cores, "set_threads", lambda n, first=False: set_to.append(n))
    share = Share(Registry(folder), "run mine", total=2, threads=2, fixed=False, log=lines.append)
    assert share.rebalance() is None and share.rebalance(force=True) is None  # not yet; alone
    other = child()
    claim = write_claim(folder, other.pid, 1, "run other")
    assert share.rebalance(force=True) == 1 and set_to == [1]
    assert lines == ["now using 1 of 2 CPU threads: run other holds 1"]
    assert json.loads(share.path.read_text())["threads"] == 1
    time.sleep(0.3)  # the other one sleeps: idle since the last look
    assert share.rebalance(force=True) == 2
    assert lines[-1] == "now using 2 of 2 CPU threads: run other holds 1 but is idle"
    claim.unlink()
    assert share.rebalance(force=True) is None
    share.release()
    assert not share.path.exists()


# --- real processes -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_training_worker_beside_a_busy_claim_takes_fewer_threads_and_says_so(tmp_path, tiny_model, child,
                                                                              monkeypatch):
    total = cpu_cores()
    if total < 2:
        pytest.skip("one core: every process takes it")
    folder = tmp_path / "cores"
    ws = make_workspace(tmp_path / "ws", tiny_model)
    busy = child("while True: pass")
    write_claim(folder, busy.pid, 1, "tuitune eval (pid 1)")
    cfg = write_config(ws, "cores", **{"training.max_steps": 2, "training.save_steps": 100,
                                       "evaluation.prompts": []})
    for var in cores.USER_ENV:
        monkeypatch.delenv(var, raising=False)  # no count of the user's
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "beside", env={cores.CORES_DIR_ENV: str(folder)},
                   timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = ws / "runs" / "beside"
    log = (run / "train.log").read_text(encoding="utf-8")
    assert f"using {total - 1} of {total} CPU threads: tuitune eval (pid 1) holds 1" in log, log[-3000:]
    assert state(run)["threads"] == total - 1
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{busy.pid}.json", ".lock"])  # the worker's went


@pytest.mark.slow
def test_chat_beside_a_busy_claim_takes_fewer_threads(tmp_path, tiny_model, child, monkeypatch):
    total = cpu_cores()
    if total < 2:
        pytest.skip("one core: every process takes it")
    folder = tmp_path / "cores"
    busy = child("while True: pass")
    write_claim(folder, busy.pid, 1, "run busy")
    for var in cores.USER_ENV:
        monkeypatch.delenv(var, raising=False)
    proc = run_cli("chat", tiny_model, "--prompt", "hi", "--max-new-tokens", "3",
                   env={cores.CORES_DIR_ENV: str(folder)})
    assert proc.returncode == 0, proc.stderr
    assert f"using {total - 1} of {total} CPU threads: run busy holds 1" in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{busy.pid}.json", ".lock"])
