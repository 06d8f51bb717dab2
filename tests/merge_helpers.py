"""Helpers for the Merge tests (no tests here): adapters built directly with peft on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path


def sharded_tiny(tmp_root: Path | None = None) -> Path:
    """The tiny model saved in several safetensors shards (cached)."""
    from tuitune.sample import tiny_model_path

    return tiny_model_path(max_shard_size="1MB")


def make_adapter(base: Path, out: Path, seed: int = 0, perturb: float = 0.05, **lora) -> Path:
    """A LoRA adapter on ``base`` whose every trainable tensor is nudged, so the merge matters."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora.setdefault("r", 4)
    lora.setdefault("lora_alpha", 8)
    lora.setdefault("target_modules", "all-linear")
    pm = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * perturb)
    pm.save_pretrained(out)
    return out


def logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def reference_and_merged(base: Path, adapter: Path, merged: Path):
    """(peft base+adapter logits, merged-without-peft logits, merged model) on a fixed prompt."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 17, 300, 42, 999, 5, 2000, 7]])
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    merged_model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return logits(ref, ids), logits(merged_model, ids), logits(plain, ids), merged_model


def config(path: Path) -> dict:
    return json.loads((Path(path) / "config.json").read_text())
