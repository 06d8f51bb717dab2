"""Packed training rows: full rows, and samples that never see each other."""

from __future__ import annotations

from pathlib import Path

import pytest

from train_helpers import make_workspace, write_config


@pytest.fixture
def ws(tmp_path, tiny_model) -> Path:
    return make_workspace(tmp_path / "ws", tiny_model)


def test_packed_rows_keep_every_trained_token_and_isolate_samples(ws):
    import torch

    from tuitune.config import load_config
    from tuitune.encode import IGNORE_INDEX
    from tuitune.train.build import build_dataset, build_trainer
    from tuitune.train.runfolder import RunFolder

    cfg = load_config(write_config(ws, "packed", **{"data.pack": True, "data.max_length": 128,
                                                    "training.batch_size": 4}), workspace=ws)
    trainer, tok = build_trainer(cfg, RunFolder(ws / "runs" / "packed"), log=lambda *a: None)
    plain = build_dataset(cfg, tok, ws / "data" / "self_cognition.jsonl", pack=False,
                          cache_dir=ws / ".cache" / "plain")
    packed = trainer.train_dataset
    # Several samples per row, rows nearly full, and every trained token of every sample is
    # still trained (less the first label of each sample, which was -100 anyway in chat data).
    assert len(packed) <= len(plain) / 3
    fill = sum(len(r) for r in packed["input_ids"]) / (128 * len(packed))
    assert fill > 0.9, fill
    trained = lambda ds: sum(sum(l != IGNORE_INDEX for l in r) for r in ds["labels"])  # noqa: E731
    assert trained(packed) == trained(plain)

    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch  # else transformers would attend across samples
    model = trainer.model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        row, pos = batch["input_ids"][0], batch["position_ids"][0]
        starts = [i for i in range(len(pos)) if pos[i] == 0]
        assert len(starts) >= 3, starts
        # The second and third samples of the row: their logits equal a forward pass of each alone.
        for a, b in zip(starts[1:3], starts[2:4]):
            alone = model(input_ids=row[a:b].unsqueeze(0)).logits[0]
            torch.testing.assert_close(logits[0, a:b], alone, atol=1e-4, rtol=1e-4)


@pytest.fixture
def per_sample_sdpa(monkeypatch):
    """tuitune's per-sample attention as ``sdpa`` for this test only."""
    from transformers import AttentionInterface

    import tuitune.train.attention as attention

    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", AttentionInterface._global_mapping["sdpa"])
    monkeypatch.setattr(attention, "_installed", False)
    monkeypatch.setattr(attention, "_last", (None, None))
    attention.install()
    return attention


def _packed_batch(seed: int = 0, rows: int = 3, length: int = 96):
    import random

    import torch

    rng = random.Random(seed)
    ids, pos = [], []
    for _ in range(rows):
        p: list[int] = []
        while len(p) < length:
            p += list(range(min(rng.randint(5, 40), length - len(p))))
        pos.append(p)
        ids.append([rng.randint(3, 2000) for _ in range(length)])
    return torch.tensor(ids), torch.tensor(pos)


def _loss_logits_grad(model, ids, pos):
    model.zero_grad()
    out = model(input_ids=ids, position_ids=pos, labels=ids, use_cache=False)
    out.loss.backward()
    return out.loss.detach(), out.logits.detach(), model.model.layers[0].self_attn.k_proj.weight.grad.clone()


def test_per_sample_attention_equals_the_block_mask_in_values_and_gradients(tiny_model, request):
    """The same loss, logits and gradients as transformers' masked sdpa (grouped-query heads)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA is exercised
    ids, pos = _packed_batch()
    masked = _loss_logits_grad(model, ids, pos)
    attention = request.getfixturevalue("per_sample_sdpa")
    cut = []
    real = attention._segments
    request.getfixturevalue("monkeypatch").setattr(attention, "_segments", lambda p: cut.append(real(p)) or cut[-1])
    per_sample = _loss_logits_grad(model, ids, pos)
    assert cut and all(c is not None for c in cut)  # the per-sample path ran
    for a, b in zip(masked, per_sample):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # Each sample of a row sees only itself: its logits equal a forward pass of it alone.
    starts = [i for i, p in enumerate(pos[1].tolist()) if p == 0] + [pos.shape[1]]
    for s, e in zip(starts[:2], starts[1:3]):
        with torch.no_grad():
            alone = model(input_ids=ids[1:2, s:e], use_cache=False).logits[0]
        torch.testing.assert_close(per_sample[1][1, s:e], alone, atol=1e-4, rtol=1e-4)


def test_per_sample_attention_leaves_other_forwards_to_sdpa(tiny_model, per_sample_sdpa, monkeypatch):
    """Unpacked rows, padded batches and generation with a KV cache take transformers' sdpa path."""
    import torch
    from transformers import AutoModelForCausalLM

    cut = []
    real = per_sample_sdpa._segments
    monkeypatch.setattr(per_sample_sdpa, "_segments", lambda p: cut.append(real(p)) or cut[-1])
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 0, 0]])
    with torch.no_grad():
        model(input_ids=ids, attention_mask=torch.tensor([[1] * 6, [1] * 4 + [0] * 2]))
        out = model.generate(input_ids=ids[:1], max_new_tokens=4, do_sample=False)
    assert out.shape[1] == 10
    assert cut and all(c is None for c in cut)  # looked at, and handed on: no row held two samples
