"""Starting, resuming and stopping runs as detached processes.

A run's worker is started in a session of its own (``start_new_session=True``), with
stdin from /dev/null and its output appended to ``train.log``: closing the terminal,
losing SSH or quitting the TUI sends it nothing, and no pipe to a UI can fill and stall it.

A job on several machines (node flags, waiting for node 0, the SLURM script) is
``tuitune.train.multinode``'s; the trackers' set-up is ``tuitune.train.tracking``'s, done by the worker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from tuitune.errors import TuituneError
from tuitune.fsutil import slug
from tuitune.train.multinode import load_for_launch, master_timeout, node_state, wait_for_master
from tuitune.train.runfolder import LIVE, RunFolder, find_run, process_start_time, runs_dir, trained_on


def prepare_run(config_path: str | Path, workspace: str | Path, name: str | None = None) -> RunFolder:
    """Validate the config and write the run folder (frozen config, state ``starting``)."""
    return _prepare(config_path, workspace, name)[0]


def _prepare(config_path, workspace, name, nodes: Mapping | None = None, log=None):
    """:func:`prepare_run`, with the config it read: the launch command is made from it, not read again.

    ``nodes``: ``distributed.*`` values from the command line (see :func:`load_for_launch`). A node
    other than node 0 waits for node 0 to answer before it writes its run folder, whose id ends
    in ``-node<N>`` (the same ``--name`` on every node of a job on a shared filesystem).
    """
    from tuitune.config import ERROR, check_config, save_config

    workspace = Path(workspace).resolve()
    cfg = load_for_launch(config_path, workspace, nodes)
    problems = [i for i in check_config(cfg) if i.level == ERROR]
    if problems:
        p = problems[0]
        more = f" (and {len(problems) - 1} more: `tuitune config check {config_path}`)" if len(problems) > 1 else ""
        raise TuituneError(p.format(config_path) + more)
    d = cfg.distributed
    node = f"-node{d.node_rank}" if d.node_rank > 0 else ""
    root = runs_dir(workspace)
    if name:
        run_id = slug(name) + node
        existing = RunFolder(root / run_id)
        if existing.path.exists():
            status = existing.status().get("status", "unknown")
            if status in LIVE:
                raise TuituneError(f"run {run_id} is {status} in {existing.path}; pick another --name, or "
                                   f"`tuitune runs stop {run_id}` first")
            raise TuituneError(f"run {run_id} already exists ({status}); pick another --name, or continue it "
                               f"with `tuitune runs resume {run_id}`")
    else:
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{slug(Path(config_path).stem)}{node}"
        n = 2
        base = run_id
        while (root / run_id).exists():
            run_id, n = f"{base}-{n}", n + 1
    if d.node_rank > 0:
        wait_for_master(d.master_addr, d.master_port, master_timeout(), log=log)
    run = RunFolder(root / run_id)
    run.path.mkdir(parents=True)
    save_config(cfg, run.config_path)
    run.write_state(status="starting", created=time.time(), host=socket.gethostname(), workspace=str(workspace),
                    config_source=str(Path(config_path).resolve()), name=run_id, model=cfg.model,
                    method=cfg.method, task=cfg.task, step=0, total_steps=None, trained_on=trained_on(cfg), **node_state(cfg))
    run.append_event({"type": "lifecycle", "event": "created", "config": str(Path(config_path).resolve())})
    return run, cfg


def worker_command(run: RunFolder, resume: bool, cfg=None) -> list[str]:
    """The worker's command line (torchrun for several GPUs or nodes); ``cfg``: the run's config, if
    this process has it already, else its frozen ``config.yaml`` is read."""
    from tuitune.config import load_config, to_launch_command

    if cfg is None:
        cfg = load_config(run.config_path, workspace=run.read_state().get("workspace"))
    argv = ["-m", "tuitune.train.worker", str(run.path)] + (["--resume"] if resume else [])
    return to_launch_command(cfg, argv)


def worker_env() -> dict:
    """The worker's environment: unbuffered output, no tokenizers thread pool warnings."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def spawn(run: RunFolder, resume: bool = False, cfg=None) -> int:
    """Start the worker detached; returns its pid (also the process group and session id)."""
    cmd = worker_command(run, resume, cfg)
    ws = run.read_state().get("workspace") or str(run.path.parent.parent)
    with open(run.log_path, "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=ws, env=worker_env(), close_fds=True)
    run.write_state(status="starting", pid=proc.pid, pgid=proc.pid, pid_start=process_start_time(proc.pid),
                    host=socket.gethostname(), started=time.time(), command=cmd, error=None)
    return proc.pid


def start_run(config_path, workspace, name: str | None = None, foreground: bool = False,
              nodes: Mapping | None = None, log=None) -> tuple[RunFolder, int | None]:
    """Prepare a run and start it detached (returns its pid); ``foreground`` only prepares it,
    for :func:`tuitune.train.foreground.exec_foreground`. ``nodes``: ``distributed.*`` set for this
    launch (``{"node_rank": 1}``); ``log``: where a node waiting for node 0 says so."""
    run, cfg = _prepare(config_path, workspace, name, nodes, log)
    if foreground:
        return run, None
    return run, spawn(run, cfg=cfg)


def resume_run(workspace, run_id: str, foreground: bool = False,
               checkpoint: int | str | None = None) -> tuple[RunFolder, int | None]:
    """Continue a stopped or failed run from its newest checkpoint, or from ``checkpoint`` (a step).

    Resuming from an earlier checkpoint moves the later ones aside (``RunFolder.rewind_to``).
    Detached it returns the worker's pid; ``foreground`` only prepares the run, as in ``start_run``.
    """
    run = find_run(workspace, run_id)
    status = run.status()
    if status.get("status") in LIVE:
        raise TuituneError(f"run {run.id} is {status['status']}; it is training already "
                           f"(`tuitune runs follow {run.id}`)")
    if status.get("status") == "finished":
        raise TuituneError(f"run {run.id} finished; start a new run to train further")
    if (status.get("nnodes") or 1) > 1:
        # Every node would need the checkpoint, which only node 0's run folder holds.
        raise TuituneError(f"run {run.id} ran on {status['nnodes']} machines, and resuming continues runs of one "
                           "machine only; start the job again with `tuitune train CONFIG` on every node")
    latest = run.latest_checkpoint()
    if latest is None:
        raise TuituneError(f"run {run.id} has no complete checkpoint to resume from; start it again with "
                           f"`tuitune train {run.config_path}`")
    superseded = None
    if checkpoint is not None:
        latest = run.checkpoint(checkpoint)
        superseded = run.rewind_to(latest)
    changes = {"superseded": str(superseded)} if superseded else {}
    run.write_state(status="starting", error=None, resumed_from=str(latest), step=_step(latest),
                    last_checkpoint=str(latest), **changes)
    if foreground:
        return run, None
    return run, spawn(run, resume=True)


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[-1])


def delete_run(workspace, run_id: str) -> RunFolder:
    """Delete a run folder (refused while it is starting, running or stopping)."""
    run = find_run(workspace, run_id)
    run.delete()
    return run


def stop_run(workspace, run_id: str, kill: bool = False, wait: float = 0) -> RunFolder:
    """Ask a run to checkpoint and stop; ``kill`` ends its whole process group now."""
    run = find_run(workspace, run_id)
    status = run.status()
    if status.get("status") not in LIVE:
        raise TuituneError(f"run {run.id} is not running (it is {status.get('status', 'unknown')})")
    if kill:
        pgid = status.get("pgid") or status.get("pid")
        if not pgid:  # prepared, its process not started yet
            raise TuituneError(f"run {run.id} is starting and has no process yet; ask again in a moment")
        try:
            os.killpg(int(pgid), signal.SIGKILL)
        except ProcessLookupError:
            pass
        latest = run.latest_checkpoint()
        run.write_state(status="stopped", error="killed by the user"
                        + (f"; resume continues from {latest.name}" if latest else "; no checkpoint was saved"))
        run.append_event({"type": "lifecycle", "event": "killed"})
        return run
    run.request("stop")  # the worker marks itself "stopping" when it sees this, after its current step
    deadline = time.time() + wait
    while time.time() < deadline and run.status().get("status") in LIVE:
        time.sleep(0.5)
    return run


def save_now(workspace, run_id: str) -> RunFolder:
    run = find_run(workspace, run_id)
    status = run.status()
    if status.get("status") not in LIVE:
        raise TuituneError(f"run {run.id} is not running (it is {status.get('status', 'unknown')}); "
                           "there is nothing to save")
    run.request("save")
    return run
