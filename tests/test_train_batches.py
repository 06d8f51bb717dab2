"""Padding-free batches and the head at trained positions only (tuitune/train/trainer.py).

Both save work and must change nothing: one step's loss and LoRA gradients equal those of the
plain padded batch with logits everywhere, on the tiny model and on the real one; the token
count is the count of real tokens even where the pad id is also a real token.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import ROOT
from train_helpers import make_workspace, write_config


def _trainer(ws: Path, model: str | None = None, **overrides):
    from tuitune.config import load_config
    from tuitune.train.build import build_trainer
    from tuitune.train.runfolder import RunFolder

    flat = {"lora.dropout": 0.0, "training.batch_size": 6, "data.pack": False, **overrides}
    if model:
        flat.update({"model": model, "template": "auto", "data.train": "data/self_cognition_en.jsonl"})
    cfg = load_config(write_config(ws, "batches", **flat), workspace=ws)
    return build_trainer(cfg, RunFolder(ws / "runs" / "batches"), log=lambda *a: None)


def _step(model, run) -> tuple[float, dict]:
    model.zero_grad()
    loss = run()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss), grads


def _compare(trainer, atol: float) -> dict:
    """One step three ways on the same rows: padded with full logits (what a plain Trainer
    script does), padded with logits at trained positions, flattened with them."""
    import torch

    from tuitune.train.trainer import BatchCollator

    torch.manual_seed(0)
    rows = [trainer.train_dataset[i] for i in range(6)]
    assert len({len(r["input_ids"]) for r in rows}) > 1, "the rows should need padding"
    pad_id = trainer.processing_class.pad_token_id
    padded = BatchCollator(pad_id)(rows)
    flat = BatchCollator(pad_id, flatten=True)(rows)
    n = (padded["labels"][:, 1:] != -100).sum()
    model = trainer.model.train()
    ref_loss, ref = _step(model, lambda: model(**padded, num_items_in_batch=n).loss)
    out = {}
    for name, batch in (("padded, head at labels", padded), ("flattened", flat)):
        loss, grads = _step(model, lambda: trainer.compute_loss(model, batch, num_items_in_batch=n))
        assert abs(loss - ref_loss) <= atol * max(1.0, abs(ref_loss)), (name, loss, ref_loss)
        assert grads.keys() == ref.keys() and grads
        for k in ref:
            torch.testing.assert_close(grads[k], ref[k], atol=atol, rtol=1e-3, msg=lambda m: f"{name}: {k}: {m}")
        out[name] = loss
    # Less work: one row without pad, logits only where a label follows.
    assert flat["input_ids"].shape[0] == 1 and flat["input_ids"].shape[1] == sum(len(r["input_ids"]) for r in rows)
    return {"loss": ref_loss, **out}


@pytest.mark.parametrize("kernels", ["auto", "none"])  # auto here (no CUDA): the chunked loss
def test_one_step_equals_the_padded_full_logits_step_on_the_tiny_model(tmp_path, tiny_model, kernels):
    from tuitune.train.trainer import TuituneTrainer

    ws = make_workspace(tmp_path / "ws", tiny_model)
    trainer, _ = _trainer(ws, **{"training.kernels": kernels})
    assert isinstance(trainer, TuituneTrainer) and trainer._head_on_labels
    assert trainer.chunked_loss == (kernels == "auto")
    assert trainer.data_collator.flatten  # the tiny model runs sdpa
    _compare(trainer, atol=1e-5)


@pytest.mark.slow
def test_one_step_equals_the_padded_full_logits_step_on_the_real_model(tmp_path, tiny_model, real_model):
    ws = make_workspace(tmp_path / "ws", tiny_model)
    shutil.copy(ROOT / "sample_data" / "real" / "self_cognition_en.jsonl", ws / "data" / "self_cognition_en.jsonl")
    trainer, _ = _trainer(ws, model=str(real_model), **{"training.precision": "fp32"})
    _compare(trainer, atol=2e-5)


def test_the_token_count_is_real_tokens_where_the_pad_id_is_also_text():
    """SmolLM2 pads with <|im_end|>, which ends every turn: counting ids that are not the pad
    id missed one token per turn (5.6% of the real model's tokens/s)."""
    from tuitune.train.trainer import BatchCollator

    pad = 7
    rows = [{"input_ids": [1, 2, pad, 3, pad], "labels": [-100, -100, pad, 3, pad]},
            {"input_ids": [4, pad], "labels": [-100, pad]}]
    flat = BatchCollator(pad, flatten=True)(rows)
    assert int(flat["real_tokens"].sum()) == 7
    assert flat["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1]]
    # The second sample's first label is no target of the first sample's last token.
    assert flat["labels"].tolist() == [[-100, -100, pad, 3, pad, -100, pad]]
    packed = [{**r, "position_ids": list(range(len(r["input_ids"])))} for r in rows]
    padded = BatchCollator(pad)(packed)
    assert "attention_mask" not in padded and int(padded["real_tokens"].sum()) == 7


def test_a_run_counts_every_real_token(tmp_path, tiny_model):
    """End to end: after one epoch the Trainer's token count is the sum of the rows' lengths."""
    ws = make_workspace(tmp_path / "ws", tiny_model)
    trainer, _ = _trainer(ws, **{"training.max_steps": None, "training.epochs": 1, "training.batch_size": 8,
                                 "training.save_steps": 1000, "evaluation.prompts": []})
    trainer.train()
    assert trainer.state.num_input_tokens_seen == sum(len(r) for r in trainer.train_dataset["input_ids"]) > 0


def test_models_with_a_sliding_window_are_flattened_only_where_no_sample_outgrows_it():
    from types import SimpleNamespace as NS

    from tuitune.train.trainer import flattens

    model = lambda **c: NS(config=NS(_attn_implementation=c.pop("attn", "sdpa"), **c))  # noqa: E731
    assert flattens(model(), 2048)  # Llama: no window
    assert flattens(model(attn="flash_attention_2"), 2048)
    assert not flattens(model(attn="eager"), 2048)  # its (row x row) mask would be huge
    assert flattens(model(sliding_window=4096), 2048)  # Mistral at 2048: no sample reaches the window
    assert not flattens(model(sliding_window=4096), 8192)
    assert flattens(model(sliding_window=131072, use_sliding_window=False), 32768)  # Qwen2.5
    assert not flattens(model(sliding_window=512, layer_types=["sliding_attention", "full_attention"]), 2048)
