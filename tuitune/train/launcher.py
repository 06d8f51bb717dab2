"""Starting, resuming and stopping runs as detached processes.

A run's worker is started in a session of its own (``start_new_session=True``), with
stdin from /dev/null and its output appended to ``train.log``: closing the terminal,
losing SSH or quitting the TUI sends it nothing, and no pipe to a UI can fill and stall it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tuitune.errors import TuituneError
from tuitune.fsutil import slug
from tuitune.train.runfolder import LIVE, RunFolder, find_run, process_start_time, runs_dir, trained_on


def prepare_run(config_path: str | Path, workspace: str | Path, name: str | None = None) -> RunFolder:
    """Validate the config and write the run folder (frozen config, state ``starting``)."""
    return _prepare(config_path, workspace, name)[0]


#: The command-line flags that set ``distributed.*`` for one launch (``tuitune train --node-rank 1``).
NODE_FLAGS = {"nnodes": "--nnodes", "node_rank": "--node-rank", "master_addr": "--master-addr",
              "master_port": "--master-port"}

#: Seconds a node other than node 0 waits for the master to answer before it gives up.
MASTER_TIMEOUT_ENV = "TUITUNE_MASTER_TIMEOUT"
MASTER_TIMEOUT = 60.0


def load_for_launch(config_path, workspace, nodes: Mapping | None = None):
    """The config at ``config_path``, with ``nodes`` ({"node_rank": 1, ...}, None values ignored)
    set over its ``distributed`` section: every node of a job runs the same file."""
    from pydantic import ValidationError

    from tuitune.config import load_config

    cfg = load_config(config_path, workspace=workspace)
    for key, value in (nodes or {}).items():
        if value is None:
            continue
        try:
            setattr(cfg.distributed, key, value)
        except ValidationError as exc:
            raise TuituneError(f"{NODE_FLAGS[key]} {value}: {exc.errors()[0]['msg']}") from None
    d = cfg.distributed
    if d.node_rank >= d.nnodes:  # the schema checks the file; this, a flag over it
        raise TuituneError(f"{config_path}: distributed.node_rank {d.node_rank} must be below distributed.nnodes "
                           f"{d.nnodes}; give each node its rank, 0 to {d.nnodes - 1} (--node-rank N)")
    return cfg


def master_timeout(environ: Mapping[str, str] = os.environ) -> float:
    """How long a node waits for node 0 (``TUITUNE_MASTER_TIMEOUT`` seconds, default 60)."""
    text = environ.get(MASTER_TIMEOUT_ENV, "").strip()
    if not text:
        return MASTER_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise TuituneError(f"{MASTER_TIMEOUT_ENV}={text}: not a number of seconds above 0; unset it for "
                           f"the default {MASTER_TIMEOUT:g} s")
    return value


def wait_for_master(addr: str, port: int, timeout: float, log=None, every: float = 0.5) -> float:
    """Connect to node 0's rendezvous port until it answers (returns the seconds waited), or raise
    the one-line error after ``timeout`` seconds: torchrun alone would wait ten minutes, silently.

    node 0's torchrun listens there as soon as it starts, before any other node joins; a plain
    connect that sends nothing is not counted as a node by it.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    said = False
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((addr, port), timeout=max(0.1, min(5.0, left))):
                return time.monotonic() - t0
        except socket.gaierror as exc:
            raise TuituneError(f"distributed.master_addr {addr}: no such host ({exc.strerror}); set it to "
                               "node 0's address, which every node can reach") from None
        except OSError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            raise TuituneError(f"distributed.master_addr {addr}:{port} did not answer within {timeout:g} s; "
                               "start node 0 first, or check the address/port/firewall")
        if log is not None and not said:
            log(f"waiting up to {timeout:g} s for node 0 at {addr}:{port} ({MASTER_TIMEOUT_ENV} sets how long)")
            said = True
        time.sleep(min(every, left))


def node_state(cfg) -> dict:
    """What a run folder of a job on several machines says about its node (empty on one machine)."""
    d = cfg.distributed
    if d.nnodes == 1:
        return {}
    out = {"node_rank": d.node_rank, "nnodes": d.nnodes, "master": f"{d.master_addr}:{d.master_port}"}
    if d.node_rank > 0:
        out["note"] = (f"node {d.node_rank} of {d.nnodes}: losses, samples, checkpoints and the final output are "
                       f"in node 0's run folder (master {d.master_addr})")
    return out


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


def slurm_script(config_path, workspace, name: str | None = None, nodes: Mapping | None = None) -> str:
    """An sbatch script that runs ``tuitune train CONFIG --foreground`` once on every node of the
    allocation: ``srun`` one task a node, the node count from ``SLURM_NNODES``, each node's rank from
    ``SLURM_NODEID``, the master the allocation's first host. ``#SBATCH --nodes`` and the GPUs a
    node come from the config (``nodes`` over it); ``sbatch --nodes=N`` overrides the count.
    """
    import shlex

    from tuitune.fsutil import python_cmd

    workspace = Path(workspace).resolve()
    cfg = load_for_launch(config_path, workspace, nodes)
    d = cfg.distributed
    config = Path(config_path).resolve()
    stem = slug(config.stem)
    q = shlex.quote
    train = [*python_cmd(), "-m", "tuitune", "-w", str(workspace), "train", str(config), "--foreground"]
    return "\n".join([
        "#!/bin/bash",
        f"# tuitune: {config.name} on every node of a SLURM allocation; submit with `sbatch THIS_FILE`",
        "# (written by `tuitune train CONFIG --print-launch slurm`). Node 0 is the allocation's first host;",
        "# each node writes its own run folder in the workspace, node 0's holds the losses, checkpoints and",
        "# output. The workspace and the Python below must be at the same paths on every node.",
        f"#SBATCH --job-name=tuitune-{stem}",
        f"#SBATCH --nodes={d.nnodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={d.gpus}",
        f"#SBATCH --output={workspace / 'runs'}/slurm-%j.out",  # sbatch reads no shell quotes here
        "set -euo pipefail",
        "",
        'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f'MASTER_PORT="${{TUITUNE_MASTER_PORT:-{d.master_port}}}"',
        f'RUN_NAME="${{TUITUNE_RUN_NAME:-{slug(name) if name else stem + "-job$SLURM_JOB_ID"}}}"',
        'echo "tuitune: $SLURM_NNODES nodes, master $MASTER_ADDR:$MASTER_PORT, run $RUN_NAME"',
        "",
        "# One task a node; SLURM_NODEID is read inside each task (bash -c), the rest is the same everywhere.",
        "# A node that fails ends the others (--kill-on-bad-exit). To stop every node after a checkpoint:",
        "# `tuitune -w WORKSPACE runs stop RUN_NAME` (node 0's run), from any machine that sees the workspace.",
        'srun --nodes="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 \\',
        "  bash -c 'exec \"$@\" --node-rank \"$SLURM_NODEID\"' tuitune-node \\",
        f"  {' '.join(q(a) for a in train)} \\",
        '  --name "$RUN_NAME" --nnodes "$SLURM_NNODES" --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT"',
        "",
    ])


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


@dataclass
class TrackingSetup:
    """What the worker does for ``training.report_to``: variables to set, folders to make, lines to log."""
    env: dict[str, str] = field(default_factory=dict)
    dirs: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def tracking_env(report_to, run_dir, environ: Mapping[str, str]) -> TrackingSetup:
    """Point each chosen tracker at the run folder's ``tracking/``, offline where there is no login.

    Reads only ``environ`` (and, for wandb and swanlab, whether a saved login exists); a variable
    already set there is the user's choice and is never replaced. wandb without ``WANDB_API_KEY``
    or a ``~/.netrc`` entry runs offline (``wandb sync`` uploads later), swanlab without
    ``SWANLAB_API_KEY`` or a saved login likewise (``swanlab sync``); mlflow writes a file store
    unless ``MLFLOW_TRACKING_URI`` is set; trackio is local unless ``TRACKIO_SPACE_ID`` is set.
    """
    from tuitune.config.convert import tracking_dir

    root = tracking_dir(Path(run_dir).resolve())
    out = TrackingSetup()

    def put(key: str, value, folder: bool = False) -> str:
        """``environ[key]`` if the user set it, else ``value`` (to be set, and made if a folder)."""
        if environ.get(key):
            return environ[key]
        out.env[key] = str(value)
        if folder:
            out.dirs.append(Path(value))
        return str(value)

    for name in report_to:
        if name == "tensorboard":
            where = put("TENSORBOARD_LOGGING_DIR", root / "tensorboard", folder=True)
            out.lines.append(f"tracking: tensorboard writes to {where} (view: tensorboard --logdir {where})")
        elif name == "wandb":
            where = Path(put("WANDB_DIR", root, folder=True)) / "wandb"
            login = _wandb_login(environ)
            mode = environ.get("WANDB_MODE") or ("online" if login else put("WANDB_MODE", "offline"))
            if mode in ("offline", "dryrun"):
                why = "" if environ.get("WANDB_MODE") else " (no WANDB_API_KEY or ~/.netrc login)"
                out.lines.append(f"tracking: wandb offline{why}, files in {where} "
                                 f"(upload later: wandb sync {where}/offline-run-*)")
            elif mode == "disabled":
                out.lines.append("tracking: wandb disabled by WANDB_MODE=disabled")
            else:
                out.lines.append(f"tracking: wandb reports to its hosted service ({login or 'WANDB_MODE'}), "
                                 f"local files in {where}")
        elif name == "swanlab":
            where = put("SWANLAB_LOG_DIR", root / "swanlab", folder=True)
            # SWANLAB_LOGDIR: the newer SDK's name for the same setting.
            put("SWANLAB_LOGDIR", where)
            login = _swanlab_login(environ)
            mode = environ.get("SWANLAB_MODE") or ("cloud" if login else put("SWANLAB_MODE", "offline"))
            if mode in ("offline", "local"):
                why = "" if environ.get("SWANLAB_MODE") else " (no SWANLAB_API_KEY or saved login)"
                out.lines.append(f"tracking: swanlab {mode}{why}, files in {where} "
                                 f"(upload later: swanlab sync {where})")
            elif mode == "disabled":
                out.lines.append("tracking: swanlab disabled by SWANLAB_MODE=disabled")
            else:
                out.lines.append(f"tracking: swanlab reports to its hosted service ({login or 'SWANLAB_MODE'}), "
                                 f"local files in {where}")
        elif name == "mlflow":
            uri = put("MLFLOW_TRACKING_URI", (root / "mlruns").as_uri())
            if "MLFLOW_TRACKING_URI" in out.env:
                # MLflow 3 refuses its file store (in maintenance) unless this says it is wanted.
                put("MLFLOW_ALLOW_FILE_STORE", "true")
            if uri.startswith("file:"):
                out.lines.append(f"tracking: mlflow writes to {uri} (view: mlflow ui --backend-store-uri {uri})")
            else:
                out.lines.append(f"tracking: mlflow reports to {uri} (MLFLOW_TRACKING_URI)")
        elif name == "trackio":
            where = put("TRACKIO_DIR", root / "trackio", folder=True)
            space = environ.get("TRACKIO_SPACE_ID")
            if space:
                out.lines.append(f"tracking: trackio reports to the Space {space} (TRACKIO_SPACE_ID), "
                                 f"local files in {where}")
            else:
                out.lines.append(f"tracking: trackio writes to {where} (view: TRACKIO_DIR={where} trackio show)")
    return out


def _netrc_has(path: Path, host: str) -> bool:
    """Whether the netrc file at ``path`` has an entry for ``host`` (its secret is not looked at)."""
    import netrc

    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        try:
            return f"machine {host}" in path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("HOME") or Path.home())


def _wandb_login(environ: Mapping[str, str]) -> str | None:
    """How wandb would log in here ("WANDB_API_KEY", "~/.netrc"), or None."""
    if environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    from urllib.parse import urlparse

    host = urlparse(environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = Path(environ["NETRC"]) if environ.get("NETRC") else _home(environ) / ".netrc"
    return "~/.netrc" if _netrc_has(path, host) else None


def _swanlab_login(environ: Mapping[str, str]) -> str | None:
    """How swanlab would log in here ("SWANLAB_API_KEY", or the login ``swanlab login`` saved), or None."""
    if environ.get("SWANLAB_API_KEY"):
        return "SWANLAB_API_KEY"
    folder = environ.get("SWANLAB_ROOT") or environ.get("SWANLAB_SAVE_DIR")
    saved = Path(folder) if folder else _home(environ) / ".swanlab"
    return "swanlab login" if (saved / ".netrc").is_file() else None


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
