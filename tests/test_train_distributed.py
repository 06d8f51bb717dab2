"""Several processes on the CPU: torchrun with gloo, and DeepSpeed ZeRO-2, on the tiny model.

`distributed.gpus: 2` on a machine without CUDA starts two CPU processes (gloo): the same
code path a GPU box takes with NCCL, so the multi-GPU launch, sharding and logging are tested here.
"""

from __future__ import annotations

import importlib.util

import pytest

from conftest import run_cli
from train_helpers import events, make_workspace, state, write_config

pytestmark = pytest.mark.slow

COMMON = {"training.max_steps": 8, "training.logging_steps": 1, "training.save_steps": 4,
          "evaluation.prompts": ["请介绍一下你自己"], "evaluation.every": 4, "evaluation.max_new_tokens": 8,
          "training.warmup_ratio": 0.0, "training.lr": 2e-3}


@pytest.fixture
def ws(tmp_path, tiny_model):
    return make_workspace(tmp_path / "ws", tiny_model)


def test_two_processes_match_one_with_the_same_global_batch(ws):
    one = write_config(ws, "one", **COMMON, **{"training.batch_size": 8, "training.grad_accum": 2})
    two = write_config(ws, "two", **COMMON, **{"training.batch_size": 8, "training.grad_accum": 1,
                                               "distributed.gpus": 2, "distributed.master_port": 29611})
    for cfg, name in ((one, "one"), (two, "two")):
        proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", name, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert state(ws / "runs" / name)["status"] == "finished"
    assert state(ws / "runs" / "two")["world_size"] == 2
    a = {e["step"]: e["loss"] for e in events(ws / "runs" / "one", "train")}
    b = {e["step"]: e["loss"] for e in events(ws / "runs" / "two", "train")}
    assert sorted(a) == sorted(b) == list(range(1, 9))
    # Same 16 samples per optimizer step, gradients averaged over the same tokens: the curves
    # agree up to float reordering (all-reduce sums in another order than accumulation).
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=2e-3, abs=2e-3), (step, a[step], b[step])
    assert a[8] < a[1]
    # Only rank 0 writes: one event per step, not two; samples answered on every rank, written once.
    assert len(events(ws / "runs" / "two", "train")) == 8
    assert len([e for e in events(ws / "runs" / "two", "sample") if e["when"] == "during"]) == 1
    assert (ws / "runs" / "two" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_deepspeed_zero2_on_two_cpu_processes(ws):
    cfg = write_config(ws, "z2", **COMMON, **{"training.batch_size": 8, "distributed.gpus": 2,
                                              "distributed.deepspeed": "zero2", "distributed.master_port": 29612})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "z2", timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    run = ws / "runs" / "z2"
    assert state(run)["status"] == "finished"
    losses = [e["loss"] for e in events(run, "train")]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "checkpoints" / "checkpoint-8").is_dir()
