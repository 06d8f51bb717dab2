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
    assert len(packed) < len(plain) / 3
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
