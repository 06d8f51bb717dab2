"""state.json has two writers (the launcher: pid and process group; the worker: threads, status,
step) that can write in the same instant: neither may lose the other's fields."""

from __future__ import annotations

import multiprocessing as mp

from tuitune.train.runfolder import RunFolder


def _writer(path: str, key: str, n: int) -> None:
    run = RunFolder(path)
    for i in range(n):
        run.write_state(**{key: i})


def test_two_processes_writing_state_at_once_keep_each_other_s_fields(tmp_path):
    run = RunFolder(tmp_path / "r")
    run.path.mkdir()
    run.write_state(status="starting")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(run.path), key, 300)) for key in ("pid", "threads")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    state = run.read_state()
    # Without the lock a write read the file before the other's rename and put its old copy back.
    assert (state["status"], state["pid"], state["threads"]) == ("starting", 299, 299), state


def test_killing_a_run_whose_process_has_not_started_is_one_line(tmp_path):
    import pytest

    from tuitune.errors import TuituneError
    from tuitune.train.launcher import stop_run
    from tuitune.workspace import Workspace

    ws = Workspace.at(tmp_path / "ws").ensure().root
    run = RunFolder(ws / "runs" / "early")
    run.path.mkdir(parents=True)
    run.write_state(status="starting")  # prepared: no pid yet
    with pytest.raises(TuituneError, match="run early is starting and has no process yet"):
        stop_run(ws, "early", kill=True)
