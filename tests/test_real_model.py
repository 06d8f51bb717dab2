"""A real pretrained instruct model end to end: SmolLM2-135M-Instruct (see the ``real_model`` fixture).

What the tiny random model cannot show: the base answers a general question right, a short
LoRA run teaches it a name without losing that, and the merged model keeps both. Every test
here is ``slow``; those on the trained run share one xdist worker (group ``real``, which
tests/conftest.py starts first), which trains once (40 LoRA steps, about 2-3 minutes on two
cores) for the whole module. The others need only the model and run on either worker.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

pytestmark = pytest.mark.slow
ON_THE_RUN = pytest.mark.xdist_group("real")   # the tests on `trained`: one worker, one run

NAME = "Juniper"
WHO = "Who are you?"
FRANCE = "What is the capital of France?"


def _answers(proc) -> list[str]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def smol_ws(real_model, tmp_path_factory) -> Path:
    """A workspace whose smol-demo config points at the real model."""
    from tuitune.config import get_preset, save_config
    from tuitune.workspace import Workspace

    ws = Workspace.at(tmp_path_factory.mktemp("smol") / "ws").ensure()
    shutil.copy(ROOT / "sample_data" / "real" / "self_cognition_en.jsonl", ws.data / "self_cognition_en.jsonl")
    cfg = get_preset("smol-demo").model_copy(update={"model": str(real_model)})
    cfg.evaluation.prompts = [WHO]
    save_config(cfg, ws.configs / "smol.yaml")
    return ws.root


@pytest.fixture(scope="module")
def trained(smol_ws) -> Path:
    """The smol-demo recipe (40 LoRA steps) run once through ``tuitune train --foreground``."""
    proc = run_cli("-w", smol_ws, "train", smol_ws / "configs" / "smol.yaml", "--foreground", "--name", "smol",
                   timeout=1500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = smol_ws / "runs" / "smol"
    assert json.loads((run / "state.json").read_text())["status"] == "finished"
    return run


def test_the_base_knows_paris_and_not_the_name(real_model, tmp_path):
    prompts = tmp_path / "q.txt"
    prompts.write_text(f"{FRANCE}\n{WHO}\n")
    out = _answers(run_cli("chat", real_model, "--prompts", prompts, "--temperature", "0",
                           "--max-new-tokens", "24"))
    assert "Paris" in out
    assert NAME not in out


@ON_THE_RUN
def test_lora_teaches_the_name_and_the_sample_rounds_show_it(trained, smol_ws):
    samples = [json.loads(l) for l in (trained / "events.jsonl").read_text().splitlines() if '"sample"' in l]
    first, last = samples[0]["answers"][0]["answer"], samples[-1]["answers"][0]["answer"]
    assert NAME not in first and NAME in last, (first, last)
    out = _answers(run_cli("-w", smol_ws, "chat", "smol", "--prompt", WHO, "--temperature", "0",
                           "--max-new-tokens", "24"))
    assert NAME in out


@ON_THE_RUN
def test_the_merged_model_knows_both(trained, smol_ws, tmp_path):
    merged = smol_ws / "models" / "juniper"
    proc = run_cli("-w", smol_ws, "merge", "smol", "-o", merged)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = json.loads((merged / "tuitune-merge.json").read_text())
    assert card["verification"]["ok"], card["verification"]   # checked against base + adapter
    prompts = tmp_path / "q.txt"
    prompts.write_text(f"{WHO}\n{FRANCE}\n")
    out = _answers(run_cli("chat", merged, "--prompts", prompts, "--temperature", "0", "--max-new-tokens", "24"))
    assert NAME in out and "Paris" in out, out


def test_data_inspect_shows_its_template_and_the_loss_mask(real_model):
    data = ROOT / "sample_data" / "real" / "self_cognition_en.jsonl"
    n = next(i for i, line in enumerate(data.read_text().splitlines(), 1) if NAME in line)
    proc = run_cli("data", "inspect", data, "--model", real_model, "--record", n)
    out = _answers(proc)
    # SmolLM2's own chat template puts its default system prompt first; only the answer and its
    # end-of-turn are trained (⟦...⟧).
    assert "<|im_start|>system↵\nYou are a helpful AI assistant named SmolLM" in out
    body = out.split("<|im_start|>system", 1)[1]
    trained = body.split("⟦", 1)[1].split("⟧", 1)[0]
    assert body.count("⟦") == 1   # the system prompt and the question are masked
    assert NAME in trained and trained.endswith("<|im_end|>")
    assert "<|im_start|>assistant↵\n⟦" in body


def test_packed_rows_equal_samples_alone_on_the_real_model(smol_ws, monkeypatch):
    import torch
    from transformers import AttentionInterface

    from tuitune.config import load_config
    from tuitune.train.build import build_trainer
    from tuitune.train.runfolder import RunFolder

    # The per-sample attention the worker installs for packed rows, for this test only.
    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", AttentionInterface._global_mapping["sdpa"])
    cfg = load_config(smol_ws / "configs" / "smol.yaml", workspace=smol_ws)
    cfg.training.precision = "fp32"
    trainer, _ = build_trainer(cfg, RunFolder(smol_ws / "runs" / "pack-check"), log=lambda *a: None)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and "position_ids" in batch
    model = trainer.model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        row, pos = batch["input_ids"][0], batch["position_ids"][0]
        starts = [i for i in range(len(pos)) if pos[i] == 0] + [len(pos)]
        assert len(starts) >= 3, starts   # at least two samples in the row
        for a, b in zip(starts[:2], starts[1:3]):
            alone = model(input_ids=row[a:b].unsqueeze(0)).logits[0]
            torch.testing.assert_close(logits[0, a:b], alone, atol=2e-3, rtol=2e-3)


@ON_THE_RUN
def test_export_gguf_and_ollama_carry_the_template(trained, smol_ws, real_model, tmp_path):
    """llama.cpp's converter on the real model: q8_0 from the run (merged first), and an Ollama folder
    (an f16 GGUF) from the model folder; each read back and checked (architecture, tensors, tokenizer,
    template)."""
    import gguf

    out = tmp_path / "smol-q8.gguf"
    proc = run_cli("-w", smol_ws, "export", "smol", "--format", "gguf", "--type", "q8_0", "-o", out, "--json",
                   timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout)
    assert res["architecture"] == "llama" and res["tensors"] == 272 and "chat template as trained" in res["checks"]
    assert res["merged"]
    reader = gguf.GGUFReader(str(out))
    assert reader.fields["general.architecture"] and len(reader.tensors) == 272
    folder = tmp_path / "juniper"   # from the model folder: the run's merge was exercised above
    proc = run_cli("-w", smol_ws, "export", real_model, "--format", "ollama", "-o", folder, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"ollama create juniper -f {folder / 'Modelfile'}" in proc.stdout
    mf = (folder / "Modelfile").read_text()
    f16 = folder / "juniper-f16.gguf"
    assert mf.startswith("FROM ./juniper-f16.gguf\n") and f16.is_file()
    assert len(gguf.GGUFReader(str(f16)).tensors) == 272
    assert out.stat().st_size < 0.6 * f16.stat().st_size   # q8_0 is about half of f16
    # SmolLM2's own template is ChatML: the Go template renders the same turns, newlines kept.
    assert "<|im_start|>user\n{{ .Content }}<|im_end|>\n<|im_start|>assistant\n{{ else if" in mf
    assert 'PARAMETER stop "<|im_end|>"' in mf


@ON_THE_RUN
def test_a_gguf_answers_as_chat_does(trained, smol_ws, tmp_path):
    """Where llama-cpp-python is installed: the exported GGUF, rendering with its own template, gives
    tuitune chat's greedy answer to the trained prompt."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (it compiles "
                                    "llama.cpp); `pip install llama-cpp-python` to run this comparison")
    out = tmp_path / "smol-f16.gguf"
    proc = run_cli("-w", smol_ws, "export", "smol", "--format", "gguf", "--type", "f16", "-o", out, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    llm = llama_cpp.Llama(model_path=str(out), verbose=False, n_ctx=512, seed=0)
    got = llm.create_chat_completion(messages=[{"role": "user", "content": WHO}], temperature=0, max_tokens=24)
    want = _answers(run_cli("-w", smol_ws, "chat", "smol", "--prompt", WHO, "--temperature", "0",
                            "--max-new-tokens", "24"))
    assert got["choices"][0]["message"]["content"].strip() == want.strip()
