"""The Evaluate step's learning outcome on the real model (SmolLM2-135M-Instruct): a MedQA LoRA beats its base.

Its own xdist group, so it runs beside test_real_model.py's group rather than after it.
"""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("real-eval")]


def test_medqa_lora_lowers_the_held_out_loss_and_the_report_says_so(real_model, tmp_path):
    """The learning outcome: split the MedQA sample, a short LoRA run, then `tuitune eval`: the held-out
    loss falls by at least 10% against the base model, in report.json and on the summary line."""
    from tuitune.config import get_preset, save_config
    from tuitune.workspace import Workspace

    ws = Workspace.at(tmp_path / "ws").ensure()
    proc = run_cli("-w", ws.root, "data", "convert", ROOT / "sample_data" / "medqa_sample.xlsx", "-o",
                   ws.data / "medqa.jsonl", "--preset", "medqa")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("-w", ws.root, "data", "split", ws.data / "medqa.jsonl", "-o", ws.data / "split",
                   "--test-ratio", "0.3", "--group-by", "input")
    assert proc.returncode == 0, proc.stderr
    cfg = get_preset("smol-demo").model_copy(update={"model": str(real_model)})
    cfg.data.train, cfg.data.max_length = "data/split/train.jsonl", 256
    cfg.training.max_steps, cfg.training.save_steps, cfg.training.lr = 8, 8, 1e-3
    cfg.evaluation.prompts = []
    save_config(cfg, ws.configs / "medqa.yaml")
    proc = run_cli("-w", ws.root, "train", ws.configs / "medqa.yaml", "--foreground", "--name", "medqa", timeout=1500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = ws.root / "evals" / "medqa"
    proc = run_cli("-w", ws.root, "eval", "medqa", "--max-new-tokens", "16", "-o", out, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text())
    base, tuned = rep["summary"]["baseline"]["loss"], rep["summary"]["target"]["loss"]
    assert rep["data"].endswith("split/test.jsonl") and rep["records"] >= 10
    assert tuned <= 0.9 * base, (base, tuned)
    assert proc.stdout.startswith(f"held-out loss {base:.2f} → {tuned:.2f} ({(tuned - base) / base * 100:+.0f}%)")
    print(proc.stdout.splitlines()[0])
