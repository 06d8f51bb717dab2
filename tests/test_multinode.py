"""Two machines, played by two `tuitune train` launches on this host (gloo, one process each).

node 0 and node 1 run the same config file, node 1 with `--node-rank 1`; they meet at
127.0.0.2 (a loopback address the config check accepts for nnodes > 1, where 127.0.0.1 is
refused as a mistake). The two-node job must train what one node with two processes
trains on the same global batch, end both run folders with the same status, stop on both
when node 0 is asked to, and a node whose master never answers must say so in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from train_helpers import events, kill_group, make_workspace, state, wait_until, write_config

pytestmark = pytest.mark.slow

MASTER = "127.0.0.2"
ENDED = ("finished", "stopped", "failed")
# One thread a process (torchrun sets this for several processes on one node, not for one a node):
# two nodes on one host would otherwise each take every core. The same for the one-node run,
# so both sum their gradients with the same kernels.
ENV = {"OMP_NUM_THREADS": "1"}
COMMON = {"training.logging_steps": 1, "training.warmup_ratio": 0.0, "training.lr": 2e-3,
          "training.scheduler": "constant", "training.batch_size": 4, "data.max_length": 128,
          "evaluation.prompts": [], "training.save_steps": 100}
STEPS = 6
# Same 8 samples per step, the same two shards: only the order of float sums may differ.
TOLERANCE = dict(rel=1e-3, abs=1e-3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_model) -> Path:
    return make_workspace(tmp_path_factory.mktemp("multinode") / "ws", tiny_model)


def two_nodes(ws: Path, name: str, **overrides) -> Path:
    """Write a two-node config; returns its path (node_rank 0 in the file)."""
    return write_config(ws, name, **COMMON, **{"distributed.nnodes": 2, "distributed.master_addr": MASTER,
                                               "distributed.master_port": free_port(), **overrides})


def launch_pair(ws: Path, cfg: Path, name: str) -> tuple[Path, Path]:
    """`tuitune train` on node 0, then on node 1 (`--node-rank 1`, which waits for node 0): both detached."""
    for extra in ((), ("--node-rank", "1")):
        proc = run_cli("-w", ws, "train", cfg, "--name", name, *extra, env=ENV, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return ws / "runs" / name, ws / "runs" / f"{name}-node1"


def wait_ended(*runs: Path, timeout: float = 240) -> None:
    wait_until(lambda: all(state(r)["status"] in ENDED for r in runs), timeout=timeout,
               what=f"{[r.name for r in runs]} to end")


def kill_live(*runs: Path) -> None:
    """After a failed test: end what is still running."""
    for r in runs:
        st = state(r)
        if st.get("pgid") and st["status"] not in ENDED:
            kill_group(int(st["pgid"]))


def log(run: Path) -> str:
    return (run / "train.log").read_text(errors="replace")[-3000:]


def losses(run: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events(run, "train")}


def test_two_nodes_train_as_one_node_with_two_processes(ws):
    t0 = time.monotonic()
    pair = two_nodes(ws, "pair", **{"training.max_steps": STEPS})
    one = write_config(ws, "one", **COMMON, **{"training.max_steps": STEPS, "distributed.gpus": 2,
                                               "distributed.master_port": free_port()})
    # The one-node run trains beside the pair: the time is in starting processes, not in the steps.
    proc = run_cli("-w", ws, "train", one, "--name", "one", env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = (ws / "runs" / "one", *launch_pair(ws, pair, "pair"))
    try:
        wait_ended(*runs)
    finally:
        kill_live(*runs)
    took = time.monotonic() - t0
    _, node0, node1 = runs
    for run in runs:
        assert state(run)["status"] == "finished", log(run)
    s0, s1 = state(node0), state(node1)
    assert (s0["world_size"], s0["node_rank"], s0["nnodes"]) == (2, 0, 2)
    assert (s1["world_size"], s1["node_rank"], s1["nnodes"]) == (2, 1, 2)
    assert s1["master"].startswith(MASTER) and "node 0" in s1["note"] and s1["step"] == STEPS
    # Node 0 writes the metrics and the adapter; node 1's folder says what it is and how it ended.
    assert (node0 / "adapter" / "adapter_model.safetensors").is_file()
    assert not (node1 / "adapter").exists() and events(node1, "train") == []
    assert [e["event"] for e in events(node1, "lifecycle")] == ["created", "worker_start", "finished"]
    a, b = losses(ws / "runs" / "one"), losses(node0)
    print(f"\none node, two processes: {[round(a[s], 5) for s in sorted(a)]}"
          f"\ntwo nodes, one each:     {[round(b[s], 5) for s in sorted(b)]}"
          f"\nlargest difference {max(abs(a[k] - b.get(k, 0.0)) for k in a):.2e}, tolerance {TOLERANCE}; "
          f"both runs side by side in {took:.1f} s")
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    for step in a:
        assert b[step] == pytest.approx(a[step], **TOLERANCE), (step, a[step], b[step])
    assert b[STEPS] < b[1]


def test_stop_on_node_0_stops_both(ws):
    cfg = two_nodes(ws, "long", **{"training.max_steps": 500})
    node0, node1 = launch_pair(ws, cfg, "long")
    try:
        wait_until(lambda: state(node1)["status"] == "running" and losses(node0), timeout=180,
                   what="both nodes training")
        # A request in any node's control/ is decided on every rank: save now, asked on node 1...
        proc = run_cli("-w", ws, "runs", "save", "long-node1")
        assert proc.returncode == 0, proc.stderr
        wait_until(lambda: events(node0, "checkpoint"), timeout=60, what="node 0 to save when node 1 was asked")
        # ...and stop, asked on node 0.
        proc = run_cli("-w", ws, "runs", "stop", "long")
        assert proc.returncode == 0, proc.stderr
        wait_ended(node0, node1, timeout=120)
    finally:
        kill_live(node0, node1)
    s0, s1 = state(node0), state(node1)
    assert (s0["status"], s1["status"]) == ("stopped", "stopped"), (log(node0), log(node1))
    assert s0["step"] == s1["step"] < 500
    assert Path(s0["last_checkpoint"]).name == f"checkpoint-{s0['step']}" and "last_checkpoint" not in s1
    saved = [e["step"] for e in events(node0, "checkpoint")]
    assert len(saved) == 2 and saved[0] < saved[1] == s0["step"], saved
    assert (node0 / "checkpoints" / f"checkpoint-{s0['step']}" / "adapter_model.safetensors").is_file()
    assert [e["event"] for e in events(node1, "lifecycle")][-1] == "stopped"
    assert f"stopped at step {s1['step']}, every node" in log(node1)
    assert f"stopped at step {s0['step']}, every node; the checkpoint is {s0['last_checkpoint']}" in log(node0)
    # Only node 0 holds the checkpoint: a resume is refused in one line, not left waiting for node 1.
    assert_one_line_error(run_cli("-w", ws, "runs", "resume", "long"), "ran on 2 machines")


def test_a_master_that_never_answers_fails_in_one_line(ws):
    cfg = two_nodes(ws, "lonely")
    port = free_port()  # nobody listens there
    t0 = time.monotonic()
    proc = run_cli("-w", ws, "train", cfg, "--node-rank", "1", "--master-port", str(port),
                   env={"TUITUNE_MASTER_TIMEOUT": "2"}, timeout=60)
    took = time.monotonic() - t0
    line = assert_one_line_error(proc, f"distributed.master_addr {MASTER}:{port} did not answer within 2 s",
                                 "start node 0 first")
    print(f"\n{line}\n(after {took:.1f} s)")
    assert took < 30
    assert not [p for p in (ws / "runs").iterdir() if p.name.startswith("lonely")]


def test_a_node_rank_out_of_range_is_one_line(ws):
    cfg = two_nodes(ws, "ranks")
    proc = run_cli("-w", ws, "train", cfg, "--node-rank", "2")
    assert_one_line_error(proc, "distributed.node_rank 2 must be below distributed.nnodes 2")
    bad = cfg.with_name("ranks-bad.yaml")
    bad.write_text(cfg.read_text().replace("node_rank: 0", "node_rank: 2"))
    assert "node_rank: 2" in bad.read_text()
    assert_one_line_error(run_cli("-w", ws, "train", bad), "node_rank", "nnodes")
    assert_one_line_error(run_cli("-w", ws, "train", cfg, "--node-rank", "-1"), "--node-rank")
    assert_one_line_error(run_cli("-w", ws, "train", cfg, "--print-launch", "slurm", "--master-port", "80"),
                          "--master-port 80")


def _shim(folder: Path, name: str, text: str) -> None:
    p = folder / name
    p.write_text(text)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)


def test_the_slurm_script_starts_every_node(ws, tmp_path):
    cfg = two_nodes(ws, "cluster", **{"distributed.gpus": 4, "distributed.master_port": 29555})
    proc = run_cli("-w", ws, "train", cfg, "--print-launch", "slurm")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith("#!/bin/bash\n")
    for needle in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
                   'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1', "--kill-on-bad-exit=1",
                   '--node-rank "$SLURM_NODEID"', '--nnodes "$SLURM_NNODES"', "--foreground",
                   "TUITUNE_MASTER_PORT:-29555", "cluster-job$SLURM_JOB_ID"):
        assert needle in text, needle
    assert subprocess.run(["bash", "-n"], input=text, text=True, capture_output=True).returncode == 0
    # -o writes it (executable), and never over an existing file without --force.
    out = tmp_path / "job.sbatch"
    proc = run_cli("-w", ws, "train", cfg, "--print-launch", "slurm", "-o", out)
    assert proc.returncode == 0 and out.read_text() == text and os.access(out, os.X_OK), proc.stderr
    assert_one_line_error(run_cli("-w", ws, "train", cfg, "--print-launch", "slurm", "-o", out), "--force")
    assert run_cli("-w", ws, "train", cfg, "--print-launch", "slurm", "-o", out, "--force").returncode == 0
    assert not [p for p in (ws / "runs").iterdir() if p.name.startswith("cluster")]  # nothing started

    # Run it under stand-ins for SLURM: scontrol lists two hosts, srun starts the command once per
    # node with its SLURM_NODEID, with a printer in place of the Python that would train.
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    _shim(bin_, "scontrol", "#!/bin/sh\nprintf 'gpu-a\\ngpu-b\\n'\n")
    _shim(bin_, "srun", f"""#!{sys.executable}
import os, subprocess, sys
args = sys.argv[1:]
while args[0].startswith("--"):
    args.pop(0)
assert args[:2] == ["bash", "-c"], args
printer = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]
cmd = args[:4] + printer + args[5:]  # bash -c SCRIPT NAME [python] -P -m tuitune ...
for node in range(int(os.environ["SLURM_NNODES"])):
    subprocess.run(cmd, env={{**os.environ, "SLURM_NODEID": str(node)}}, check=True)
""")
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "gpu-[a-b]", "SLURM_JOB_ID": "77"}
    ran = subprocess.run(["bash", str(out)], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.splitlines()
    assert lines[0] == "tuitune: 2 nodes, master gpu-a:29555, run cluster-job77"
    from tuitune.cli import build_parser

    for node, line in enumerate(lines[1:]):
        argv = json.loads(line)
        assert argv[:2] == ["-m", "tuitune"] or argv[1:3] == ["-m", "tuitune"], argv
        args = build_parser().parse_args(argv[argv.index("tuitune") + 1:])
        assert (args.verb, Path(args.config), Path(args.workspace)) == ("train", cfg.resolve(), ws.resolve())
        assert (args.foreground, args.name, args.nnodes, args.node_rank) == (True, "cluster-job77", 2, node)
        assert (args.master_addr, args.master_port) == ("gpu-a", 29555)
    assert len(lines) == 3
    shutil.rmtree(bin_)
