"""A job on several machines: the node flags over the config, waiting for node 0, the SLURM script.

Every node of a job runs the same config file with its own ``--node-rank`` (``tuitune train``
reads it through :func:`load_for_launch`); a node other than node 0 waits for node 0's rendezvous
port (:func:`wait_for_master`) before it writes its run folder, whose state says which node it is
(:func:`node_state`). :func:`slurm_script` writes the sbatch script that starts every node of an
allocation. The launcher (``tuitune.train.launcher``) calls these; they start nothing themselves.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from tuitune.errors import TuituneError
from tuitune.fsutil import slug

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
