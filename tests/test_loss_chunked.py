"""The loss without the full vocabulary tensor (``training.kernels``, tuitune/train/chunked_loss.py).

One training step of the chunked loss equals the model's own forward and loss (logits at every
position, transformers' cross-entropy) on the same batch: the loss and every trainable gradient
(the LoRA weights, and the head where it trains) within 2e-5, on the tiny model and the real one.
And no (positions x vocabulary) float32 tensor is made in the step, where ``kernels: none`` makes
one: every tensor an operation creates is measured (a dispatch mode sees each one, in the forward
and the backward), and every tensor kept for the backward (saved-tensor hooks).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import ROOT
from tests.test_config import demo_ws, edit, line_of  # noqa: F401 - demo_ws is a fixture
from train_helpers import make_workspace, write_config

ATOL = 2e-5


def _trainer(ws: Path, kernels: str, model: str | None = None, **overrides):
    from tuitune.config import load_config
    from tuitune.train.build import build_trainer
    from tuitune.train.runfolder import RunFolder

    flat = {"lora.dropout": 0.0, "data.pack": False, "training.kernels": kernels, **overrides}
    if model:
        flat.update({"model": model, "template": "auto", "data.train": "data/self_cognition_en.jsonl",
                     "training.precision": "fp32"})
    cfg = load_config(write_config(ws, f"loss-{kernels}", **flat), workspace=ws)
    return build_trainer(cfg, RunFolder(ws / "runs" / f"loss-{kernels}"), log=lambda *a: None)[0]


def _storage(t) -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except (AttributeError, RuntimeError):
        return None


def _largest():
    """A dispatch mode that keeps the size in bytes of the largest tensor any operation creates,
    and the operation. Outputs that alias an input (``t``, ``view``: no new memory) are left out."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Largest(TorchDispatchMode):
        made = (0, None)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {_storage(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and _storage(t) not in inputs:
                    self.made = max(self.made, (t.numel() * t.element_size(), str(func)), key=lambda m: m[0])
            return out

    return Largest()


def _step(model, run, measure: bool = False) -> dict:
    """One forward and backward: the loss, the trainable gradients, and (``measure``) the largest
    tensor made and the largest kept for the backward, in bytes."""
    import torch

    model.zero_grad()
    saved = [0]
    weights = {_storage(p) for p in model.parameters()}

    def pack(t):  # the weights themselves are kept for the backward too, but they are no new memory
        if _storage(t) not in weights:
            saved[0] = max(saved[0], t.numel() * t.element_size())
        return t

    mode = _largest()
    if measure:
        with mode, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = run()
            loss.backward()
    else:
        loss = run()
        loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {"loss": float(loss.detach()), "grads": grads, "made": mode.made, "saved": saved[0]}


def _compare(trainer, n_rows: int, all_labelled: bool = False) -> dict:
    """The trainer's loss step against the model's own forward and loss on the same batch."""
    import torch

    from tuitune.train.trainer import BatchCollator, trained_positions

    torch.manual_seed(0)
    rows = [trainer.train_dataset[i] for i in range(n_rows)]
    batch = BatchCollator(trainer.processing_class.pad_token_id, flatten=True)(rows)
    batch.pop("real_tokens")
    if all_labelled:  # a pretraining batch: every next token a target
        batch["labels"] = batch["input_ids"].clone()
    n = (batch["labels"][:, 1:] != -100).sum()
    kept = trained_positions(batch["labels"])
    positions = batch["labels"].shape[1] if kept is None else kept[0].numel()
    model = trainer.model.train()
    ref = _step(model, lambda: model(**batch, num_items_in_batch=n).loss)
    got = _step(model, lambda: trainer.compute_loss(model, batch, num_items_in_batch=n), measure=True)
    assert got["grads"].keys() == ref["grads"].keys() and got["grads"]
    vocab = model.get_output_embeddings().weight.shape[0]
    return {"loss": abs(got["loss"] - ref["loss"]),
            "grad": max(float((got["grads"][k] - ref["grads"][k]).abs().max()) for k in ref["grads"]),
            "made": got["made"], "saved": got["saved"], "full": positions * vocab * 4, "positions": positions}


def _check(trainer, n_rows: int, **kw) -> dict:
    from tuitune.train.chunked_loss import CHUNK_ROWS

    out = _compare(trainer, n_rows, **kw)
    print(f"\nchunked={trainer.chunked_loss}: |loss - plain| {out['loss']:.2e}, max |grad - plain| {out['grad']:.2e}; "
          f"{out['positions']} positions: full logits {out['full'] / 2**20:.1f} MiB, largest tensor made "
          f"{out['made'][0] / 2**20:.1f} MiB ({out['made'][1]}), largest kept for the backward "
          f"{out['saved'] / 2**20:.1f} MiB")
    assert out["loss"] <= ATOL and out["grad"] <= ATOL, out
    if trainer.chunked_loss:
        assert out["positions"] > 2 * CHUNK_ROWS, "the batch should span several chunks"
        assert out["made"][0] < out["full"] and out["saved"] < out["full"], out
    else:
        assert out["made"][0] >= out["full"], "the measure should see the plain path's logits"
    return out


@pytest.mark.parametrize("kernels", ["auto", "none"])
def test_the_chunked_loss_equals_the_plain_one_without_the_full_logits(tmp_path, tiny_model, kernels):
    """The tiny-demo preset: LoRA, and the tied embeddings and head trained in full (their gradient
    comes from the chunks and from the embedding lookup)."""
    trainer = _trainer(make_workspace(tmp_path / "ws", tiny_model), kernels)
    assert trainer.chunked_loss == (kernels == "auto")  # no CUDA here: auto is the chunked loss
    assert any(p.requires_grad for p in trainer.model.get_output_embeddings().parameters())
    _check(trainer, 32)


def test_a_frozen_head(tmp_path, tiny_model):
    """LoRA alone (the anchors' recipe; the tiny-demo preset also trains the tied embeddings and
    head): only the hidden state's gradient leaves the chunks."""
    trainer = _trainer(make_workspace(tmp_path / "ws", tiny_model), "auto", **{"lora.modules_to_save": []})
    assert trainer.chunked_loss and not any(p.requires_grad for p in trainer._chunked_head.parameters())
    _check(trainer, 32)


def test_every_position_labelled(tmp_path, tiny_model):
    """A pretraining batch (no position left out): the targets are the labels shifted by one."""
    trainer = _trainer(make_workspace(tmp_path / "ws", tiny_model), "auto")
    _check(trainer, 16, all_labelled=True)


def test_the_held_out_loss_is_the_same(tmp_path, tiny_model):
    """Evaluation (no gradients, ``prediction_loss_only``) takes the chunked loss too."""
    ws = make_workspace(tmp_path / "ws", tiny_model)
    losses = {}
    for kernels in ("none", "auto"):
        trainer = _trainer(ws, kernels, **{"data.eval": "data/self_cognition.jsonl", "evaluation.eval_loss": True,
                                           "evaluation.prompts": []})
        losses[kernels] = trainer.evaluate()["eval_loss"]
    assert abs(losses["auto"] - losses["none"]) <= ATOL, losses


@pytest.mark.slow
def test_the_chunked_loss_on_the_real_model(tmp_path, tiny_model, real_model):
    ws = make_workspace(tmp_path / "ws", tiny_model)
    shutil.copy(ROOT / "sample_data" / "real" / "self_cognition_en.jsonl", ws / "data" / "self_cognition_en.jsonl")
    # The anchors' recipe (LoRA on every linear layer, the head frozen), in float32.
    trainer = _trainer(ws, "auto", model=str(real_model), **{"lora.modules_to_save": []})
    assert trainer.chunked_loss
    _check(trainer, 48)


# --- the setting -------------------------------------------------------------------------------

def test_liger_where_it_cannot_run_is_one_line_naming_the_field(demo_ws):
    """No CUDA here: ``kernels: liger`` is refused by `config check` and `train` (exit 2, nothing
    started), and auto is not Liger."""
    from tests.conftest import assert_one_line_error, run_cli
    from tuitune.config import load_config, to_training_arguments

    cfg_path = demo_ws / "configs" / "tiny-demo.yaml"
    assert not to_training_arguments(load_config(cfg_path), "/tmp/out").use_liger_kernel  # auto, no CUDA
    edit(cfg_path, "  kernels: auto", "  kernels: liger")
    assert to_training_arguments(load_config(cfg_path), "/tmp/out").use_liger_kernel  # what liger asks for
    line = f"line {line_of(cfg_path, 'kernels: liger')}"
    proc = run_cli("config", "check", "configs/tiny-demo.yaml", cwd=demo_ws)
    assert_one_line_error(proc, "training.kernels", line, "CUDA", "kernels: auto")
    proc = run_cli("train", "configs/tiny-demo.yaml", cwd=demo_ws)
    assert_one_line_error(proc, "training.kernels", "CUDA", "kernels: auto")
    assert not any((demo_ws / "runs").iterdir())


def test_liger_without_the_package_says_how_to_install_it(monkeypatch):
    import importlib.util

    from tuitune.train import kernels

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "liger_kernel" else real(n, *a))
    assert "pip install liger-kernel" in kernels.kernels_problem("liger", cuda=True)
    assert kernels.kernels_problem("auto", cuda=True) is None and kernels.kernels_problem("none", cuda=False) is None


def test_only_sft_and_pretrain_ask_for_liger():
    """dpo, orpo and grpo compute their loss in TRL: the setting leaves them as they were."""
    from tuitune.config import RunConfig
    from tuitune.train.kernels import use_liger

    for task, wants in (("sft", True), ("pretrain", True), ("dpo", False), ("grpo", False)):
        cfg = RunConfig.model_validate({"model": "m", "task": task, "data": {"pack": False},
                                        "training": {"kernels": "liger"}})
        assert use_liger(cfg, cuda=True) is wants, task
    assert not use_liger(RunConfig.model_validate({"model": "m", "training": {"kernels": "none"}}), cuda=True)


async def test_the_config_step_shows_the_setting_and_its_check(demo_ws):
    from screens.app import TuituneApp

    app = TuituneApp(demo_ws, start="config")
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        select = app.screen.query_one("#f-training-kernels")
        assert select.value == "auto"
        select.value = "liger"
        for _ in range(3):
            await pilot.pause()
            await app.workers.wait_for_complete()
        checks = str(app.screen.query_one("#cfg-issues").render())
        assert "training.kernels" in checks and "CUDA" in checks, checks
