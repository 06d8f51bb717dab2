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
#: The shared run trains with a named template and a system prompt (data.system), as a user's would:
#: what leaves the run carries both, and the exported GGUF must render them as training did (#25).
TEMPLATE = "chatml"
SYSTEM = "You are a helpful assistant. Answer briefly."


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
    cfg = get_preset("smol-demo").model_copy(update={"model": str(real_model), "template": TEMPLATE})
    cfg.data.system = SYSTEM
    cfg.evaluation.prompts = [WHO]
    save_config(cfg, ws.configs / "smol.yaml")
    return ws.root


@pytest.fixture(scope="module")
def trained(smol_ws) -> Path:
    """The smol-demo recipe (40 LoRA steps; template chatml, data.system) run once through
    ``tuitune train --foreground``."""
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


@pytest.fixture(scope="module")
def exported(trained, smol_ws, tmp_path_factory) -> dict:
    """The run exported once for the tests below: a q8_0 GGUF, and an Ollama folder (its GGUF f16)
    checked in llama.cpp against tuitune chat (--check-runtime). Both merge the run first."""
    out = tmp_path_factory.mktemp("exported")
    q8, folder = out / "smol-q8.gguf", out / "juniper"
    results = []
    for args in (["--format", "gguf", "--type", "q8_0", "-o", q8], ["--format", "ollama", "-o", folder,
                                                                    "--check-runtime"]):
        proc = run_cli("-w", smol_ws, "export", "smol", *args, "--json", timeout=1500)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.append(json.loads(proc.stdout))
    return {"q8": q8, "f16": folder / "juniper-f16.gguf", "folder": folder, "q8_result": results[0],
            "ollama_result": results[1], "runtime": results[1]["runtime"]}


@ON_THE_RUN
def test_export_gguf_and_ollama_carry_the_template(exported):
    """llama.cpp's converter on the real model, the run merged first: q8_0, and an Ollama folder (an f16
    GGUF); each read back and checked (architecture, tensors, tokenizer, template)."""
    import gguf

    res, q8, f16, folder = exported["q8_result"], exported["q8"], exported["f16"], exported["folder"]
    assert res["architecture"] == "llama" and res["tensors"] == 272 and "chat template as trained" in res["checks"]
    assert res["merged"] and exported["ollama_result"]["merged"]
    assert len(gguf.GGUFReader(str(q8)).tensors) == 272 and len(gguf.GGUFReader(str(f16)).tensors) == 272
    assert f"ollama create juniper -f {folder / 'Modelfile'}" == exported["ollama_result"]["command"]
    mf = (folder / "Modelfile").read_text()
    assert mf.startswith("FROM ./juniper-f16.gguf\n")
    assert q8.stat().st_size < 0.6 * f16.stat().st_size   # q8_0 is about half of f16
    # ChatML: the Go template renders the same turns, newlines kept; the run's system prompt.
    assert "<|im_start|>user\n{{ .Content }}<|im_end|>\n<|im_start|>assistant\n{{ else if" in mf
    assert 'PARAMETER stop "<|im_end|>"' in mf and f'SYSTEM """{SYSTEM}"""' in mf


def _records(n: int = 3) -> list[dict]:
    lines = (ROOT / "sample_data" / "real" / "self_cognition_en.jsonl").read_text().splitlines()
    return [json.loads(l) for l in lines[:n]]


def _first_difference(a: list, b: list) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"from token {i}: {a[i:i + 4]} against {b[i:i + 4]} (lengths {len(a)}, {len(b)})"


@ON_THE_RUN
def test_llama_cpp_renders_the_ids_training_used(exported, real_model):
    """The prompt llama.cpp renders from each GGUF's own chat template (llama-cpp-python's chat
    path) is, token for token, what tuitune chat sends and a prefix of what training encoded; a whole
    conversation is what training encoded: one and three turns, with the run's system prompt (none
    sent: the template carries it) and with one of the conversation's own."""
    import llama_cpp
    from test_export_runtime import conversations
    from transformers import AutoTokenizer

    from tuitune.data.records import with_system
    from tuitune.encode import encode_conversation
    from tuitune.export.runtime import runtime_prompt
    from tuitune.generation import messages_for
    from tuitune.templates import encode_prompt, to_turns

    tok = AutoTokenizer.from_pretrained(real_model)
    records = _records()
    for path in (exported["f16"], exported["q8"]):
        llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
        for conv in conversations(records):
            asked = records[0 if len(conv) <= 2 else 2]["conversation"][0]
            own = conv[0]["content"] if conv[0]["role"] == "system" else ""
            sent = messages_for(conv[-1]["content"], own or SYSTEM, [m for m in conv[:-1] if m["role"] != "system"])
            prompt = runtime_prompt(llm, conv)
            want = encode_prompt(tok, TEMPLATE, sent)
            assert prompt == want, (path.name, conv, _first_difference(prompt, want))
            whole = [*conv, {"role": "assistant", "content": asked["output"]}]
            trained = encode_conversation(tok, with_system({"conversation": to_turns(whole)}, SYSTEM), TEMPLATE,
                                          0)["input_ids"]
            assert runtime_prompt(llm, whole) == trained, (path.name, conv, _first_difference(
                runtime_prompt(llm, whole), trained))
            assert trained[:len(prompt)] == prompt
        del llm


@ON_THE_RUN
def test_the_f16_gguf_answers_as_tuitune_chat(exported, smol_ws, real_model, tmp_path):
    """`tuitune chat RUN --temperature 0 --dtype fp32` and llama.cpp on the f16 GGUF (the check's
    answers): the same answer on at least 4 of 5 prompts (where one differs, the check says which and
    both runtimes' logits of the two tokens), each stopping at <|im_end|>, never running on past it."""
    from transformers import AutoTokenizer

    from tuitune.export.runtime import MAX_NEW_TOKENS

    rt = exported["runtime"]
    answers = rt["answers"]
    assert [a["prompt"] for a in answers][:1] == [WHO] and len(answers) == 5   # the run's prompt first
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(a["prompt"] + "\n" for a in answers))
    proc = run_cli("-w", smol_ws, "chat", "smol", "--prompts", prompts, "--temperature", "0", "--dtype", "fp32",
                   "--max-new-tokens", MAX_NEW_TOKENS)
    chat = [json.loads(l) for l in _answers(proc).splitlines()]
    assert [c["answer"].strip() for c in chat] == [a["tuitune"] for a in answers]   # the check's side is chat
    same = [c["answer"].strip() == a["runtime"] for c, a in zip(chat, answers)]
    assert sum(same) >= 4, "\n".join(rt["details"])
    assert rt["same"] == sum(same) and rt["line"].startswith(
        "runs in llama.cpp: same answers as tuitune chat on " + ("5 prompts" if all(same) else f"{sum(same)} of 5"))
    eot = AutoTokenizer.from_pretrained(real_model).convert_tokens_to_ids("<|im_end|>")
    for c, a, s in zip(chat, answers, same):
        assert eot not in a["runtime_ids"][:-1], a   # no run-on past the end of the turn
        if s and c["finish"] == "eos":
            assert a["runtime_ids"][-1] == eot, a
    assert sum(c["finish"] == "eos" for c in chat) >= 3   # most answers end within the tokens asked for


@ON_THE_RUN
def test_the_q8_0_gguf_agrees_on_most_answer_tokens(exported):
    """q8_0 in llama.cpp picks tuitune chat's token at 80% or more of the answers' positions (after the
    same prefix; the f16 check's prompts and tuitune's answers)."""
    from tuitune.export.runtime import agreement, load_gguf, runtime_answer, runtime_prompt

    llm = load_gguf(exported["q8"])
    agree = total = same = 0
    for a in exported["runtime"]["answers"]:
        prompt = runtime_prompt(llm, [{"role": "user", "content": a["prompt"]}])
        assert len(prompt) == a["prompt_tokens"]
        agree += agreement(llm, prompt, a["tuitune_ids"])
        total += len(a["tuitune_ids"])
        same += runtime_answer(llm, prompt, len(a["tuitune_ids"])) == a["tuitune_ids"]
    assert agree >= 0.8 * total, f"q8_0 agrees on {agree} of {total} answer tokens; {same} of 5 answers the same"


@ON_THE_RUN
def test_the_modelfile_template_renders_as_the_chat_template(exported, real_model):
    """Ollama's prompt (the Modelfile's TEMPLATE and SYSTEM run as Ollama runs them) is the GGUF chat
    template's text for the same conversations, and, tokenized as Ollama tokenizes it (a BOS only
    where the GGUF says so), the same ids."""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from test_export_runtime import conversations
    from test_template_parity import _ollama_prompt

    from tuitune.export.runtime import runtime_prompt

    mf = (exported["folder"] / "Modelfile").read_text()
    llm = llama_cpp.Llama(model_path=str(exported["f16"]), vocab_only=True, verbose=False)
    jinja = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], eos_token="<|im_end|>",
                                bos_token="<|im_start|>")
    records = _records()
    for conv in conversations(records):
        for messages in (conv, [*conv, {"role": "assistant", "content": records[0]["conversation"][0]["output"]}]):
            go = _ollama_prompt(mf, messages)
            assert go == jinja(messages=messages).prompt, messages
            assert llm.tokenize(go.encode(), add_bos=True, special=True) == runtime_prompt(llm, messages)
