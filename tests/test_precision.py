"""``precision: auto`` fits the hardware; a 16-bit frozen base trains fp32 weights that save, load and merge.

The hardware facts come in as a ``Hardware`` value (or a monkeypatched probe for the code
paths that ask the machine themselves); the models are real.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from conftest import run_cli
from train_helpers import make_workspace, write_config

from tuitune.config import load_config
from tuitune.config.arguments import model_dtype
from tuitune.hardware import (
    Hardware,
    auto_precision,
    cpu_bf16_evidence,
    resolve_compute_dtype,
    resolve_precision,
    uses_autocast,
)

GPU_BF16 = Hardware(cuda=True, cuda_bf16=True, gpu_name="NVIDIA A100")
GPU_OLD = Hardware(cuda=True, cuda_bf16=False, gpu_name="Tesla T4")
CPU_AMX = Hardware(cpu_bf16="AMX (amx_bf16)")
CPU_AVX512BF16 = Hardware(cpu_bf16="AVX-512 bf16 (avx512_bf16)")
CPU_PLAIN = Hardware()


@pytest.fixture(autouse=True)
def _the_hardware_decides(monkeypatch):
    """conftest pins ``auto`` to fp32 for the suite; here the hardware's own pick is under test."""
    monkeypatch.delenv("TUITUNE_AUTO_PRECISION", raising=False)


def _cfg(tmp_path, **overrides):
    """A config (the tiny-demo preset with ``overrides``); nothing here loads its model."""
    (tmp_path / "configs").mkdir(exist_ok=True)
    return load_config(write_config(tmp_path, "p", **overrides), workspace=tmp_path)


@pytest.mark.parametrize("hw, picked, because", [
    (GPU_BF16, "bf16", "NVIDIA A100 has bf16"),
    (GPU_OLD, "fp16", "Tesla T4 has no bf16"),
    (CPU_AMX, "bf16", "AMX (amx_bf16)"),
    (CPU_AVX512BF16, "bf16", "AVX-512 bf16"),
    (CPU_PLAIN, "fp32", "neither AMX nor AVX-512 bf16"),
])
def test_auto_picks_what_the_hardware_computes_fastest_and_says_why(hw, picked, because):
    precision, why = auto_precision(hw)
    assert precision == picked
    assert because in why


def test_cpu_bf16_comes_from_the_cpu_flags_or_from_torch_s_probe():
    never = lambda name: False  # noqa: E731
    assert cpu_bf16_evidence({"avx512f", "amx_tile", "amx_bf16"}, never) == "AMX (amx_bf16)"
    assert cpu_bf16_evidence({"avx512f", "avx512_bf16"}, never) == "AVX-512 bf16 (avx512_bf16)"
    # AVX-512 alone (Ice Lake, Skylake-X) converts bf16 around every kernel: not native.
    assert cpu_bf16_evidence({"avx2", "avx512f", "avx512_vnni"}, never) == ""
    # No /proc/cpuinfo (macOS, Windows): torch's CPUID probe still tells.
    assert "AMX" in cpu_bf16_evidence(set(), lambda name: name == "_is_amx_tile_supported")
    assert "AVX-512 bf16" in cpu_bf16_evidence(set(), lambda name: name == "_is_avx512_bf16_supported")


def test_this_machine_is_judged_by_its_own_cpu_flags():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    evidence = cpu_bf16_evidence()
    if {"amx_bf16", "avx512_bf16"} & flags:
        assert evidence
    import torch

    if flags and not {"amx_bf16", "avx512_bf16"} & flags and not (
            torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()):
        assert evidence == ""  # this box (an AVX-512 Xeon without bf16 units) lands here


@pytest.mark.parametrize("written", ["fp32", "bf16", "fp16"])
def test_explicit_precision_means_what_it_says_on_any_hardware(tmp_path, written):
    cfg = _cfg(tmp_path, **{"training.precision": written})
    for hw in (GPU_BF16, GPU_OLD, CPU_AMX, CPU_PLAIN):
        assert resolve_precision(cfg, hw) == written
        assert model_dtype(cfg, hw) == {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[written]


def test_what_each_method_holds_and_where_autocast_runs(tmp_path):
    lora = _cfg(tmp_path, **{"training.precision": "auto", "method": "lora", "lora.modules_to_save": []})
    lora_mts = _cfg(tmp_path, **{"training.precision": "auto", "method": "lora"})
    assert lora_mts.lora.modules_to_save
    full = _cfg(tmp_path, **{"training.precision": "auto", "method": "full"})
    qlora = _cfg(tmp_path, **{"training.precision": "auto", "method": "qlora"})
    # LoRA: the frozen base in the picked 16-bit type.
    assert [model_dtype(lora, hw) for hw in (GPU_BF16, GPU_OLD, CPU_AMX, CPU_PLAIN)] == \
        ["bfloat16", "float16", "bfloat16", "float32"]
    # Full fine-tuning: fp32 masters everywhere; the 16-bit compute comes from autocast.
    assert {model_dtype(full, hw) for hw in (GPU_BF16, GPU_OLD, CPU_AMX, CPU_PLAIN)} == {"float32"}
    assert [uses_autocast(full, hw) for hw in (GPU_BF16, GPU_OLD, CPU_AMX, CPU_PLAIN)] == [True, True, True, False]
    # LoRA: autocast on a GPU (16-bit tensor cores for the fp32 LoRA matmuls, fp16 loss scaling);
    # on a CPU the bf16 base computes in bf16 by itself (measured faster without autocast).
    assert [uses_autocast(lora, hw) for hw in (GPU_BF16, GPU_OLD, CPU_AMX, CPU_PLAIN)] == [True, True, False, False]
    assert [uses_autocast(lora_mts, hw) for hw in (GPU_BF16, CPU_AMX, CPU_PLAIN)] == [True, False, False]
    # QLoRA: its unquantized weights are fp32 (peft upcasts them), so like full fine-tuning.
    assert [uses_autocast(qlora, hw) for hw in (GPU_BF16, GPU_OLD, CPU_AMX, CPU_PLAIN)] == [True, True, True, False]
    # QLoRA's compute dtype follows the same choice.
    assert [resolve_compute_dtype(qlora, hw) for hw in (GPU_BF16, GPU_OLD, CPU_AMX, CPU_PLAIN)] == \
        ["bfloat16", "float16", "bfloat16", "float32"]
    pinned = _cfg(tmp_path, **{"method": "qlora", "quantization.compute_dtype": "float16"})
    assert resolve_compute_dtype(pinned, CPU_AMX) == "float16"


def test_glibc_keeps_freed_heap_for_fp32_and_gpu_runs_and_not_for_bf16_on_a_cpu(tmp_path, monkeypatch):
    """A bf16 CPU run keeps glibc's defaults (in bf16 the kept heap grew the worker all run: issue 22)."""
    import ctypes

    from tuitune.train.worker import reuse_freed_memory

    calls = []

    class Libc:
        def malloc_trim(self, pad):
            calls.append(("trim", pad))

        def mallopt(self, what, value):
            calls.append((what, value))

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    auto = _cfg(tmp_path, **{"training.precision": "auto"})
    kept = {}
    for name, cfg, hw in (("bf16 cpu", auto, CPU_AMX), ("fp32 cpu", auto, CPU_PLAIN), ("gpu", auto, GPU_BF16),
                          ("fp32 written", _cfg(tmp_path, **{"training.precision": "fp32"}), CPU_AMX)):
        calls.clear()
        reuse_freed_memory(cfg, hw)
        kept[name] = dict(c for c in calls if c[0] != "trim")
    assert kept["bf16 cpu"] == {}
    for name in ("fp32 cpu", "gpu", "fp32 written"):
        assert kept[name] == {-3: 256 << 20, -1: 1 << 30}, name   # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD


def test_training_arguments_follow_the_probe(tmp_path, monkeypatch):
    from tuitune import hardware
    from tuitune.config import arguments as convert

    cfg = _cfg(tmp_path, **{"training.precision": "auto", "lora.modules_to_save": []})
    monkeypatch.setattr(hardware, "probe_hardware", lambda: CPU_AMX)
    args = convert.to_training_arguments(cfg, tmp_path / "out")
    assert (args.bf16, args.fp16, args.use_cpu) == (False, False, True)
    assert str(convert.to_model_kwargs(cfg)["dtype"]) == "torch.bfloat16"
    full = _cfg(tmp_path, **{"training.precision": "auto", "method": "full"})
    args = convert.to_training_arguments(full, tmp_path / "out")
    assert args.bf16 and str(convert.to_model_kwargs(full)["dtype"]) == "torch.float32"
    monkeypatch.setattr(hardware, "probe_hardware", lambda: CPU_PLAIN)
    args = convert.to_training_arguments(cfg, tmp_path / "out")
    assert (args.bf16, args.fp16) == (False, False)
    assert str(convert.to_model_kwargs(cfg)["dtype"]) == "torch.float32"


def _safetensors_dtypes(path: Path) -> dict[str, str]:
    """Tensor name -> dtype as written in a safetensors header (no library in between)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    return {k: v["dtype"] for k, v in header.items() if k != "__metadata__"}


@pytest.mark.parametrize("modules_to_save", [["embed_tokens", "lm_head"], []], ids=["modules_to_save", "lora_only"])
def test_a_lora_run_on_a_bf16_base_keeps_trainable_weights_fp32_and_merges(tmp_path, tiny_model, monkeypatch,
                                                                           modules_to_save):
    import torch

    from tuitune import hardware
    from tuitune.config import arguments as convert
    from tuitune.train import launcher
    from tuitune.train.build import load_model
    from tuitune.train.worker import run_worker

    monkeypatch.setattr(hardware, "probe_hardware", lambda: CPU_AMX)
    ws = make_workspace(tmp_path / "ws", tiny_model)
    # The tiny-demo preset trains embed_tokens and lm_head in full (modules_to_save) on a
    # model with tied embeddings: peft does not upcast those copies itself. Without them the
    # run has no autocast (the CPU recipe); with them it has (see convert.uses_autocast).
    path = write_config(ws, "amx", **{"training.precision": "auto", "training.max_steps": 4,
                                      "training.save_steps": 2, "evaluation.prompts": ["你是谁"],
                                      "evaluation.every": 2, "evaluation.max_new_tokens": 4,
                                      "lora.modules_to_save": modules_to_save})
    cfg = load_config(path, workspace=ws)
    model = load_model(cfg, log=lambda m: None)
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    trainable = {n: p.dtype for n, p in model.named_parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16}
    assert set(trainable.values()) == {torch.float32}
    assert any("lora_A" in n for n in trainable)
    assert any("modules_to_save" in n for n in trainable) == bool(modules_to_save)
    del model

    # The same in the worker, end to end: it trains, checkpoints, and saves an fp32 adapter.
    run = launcher.prepare_run(path, ws, name="amx")
    assert run_worker(str(run.path)) == 0
    saved = _safetensors_dtypes(run.adapter_dir / "adapter_model.safetensors")
    assert saved and set(saved.values()) == {"F32"}, saved
    assert (run.path / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    events = [json.loads(l) for l in (run.path / "events.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e.get("type") == "train" and "loss" in e]
    assert losses and all(loss == loss and loss < 20 for loss in losses)  # finite, not diverged
    # The evaluation callback generates on the bf16 base with fp32 trainable weights too.
    assert any(e.get("type") == "sample" for e in events), [e.get("type") for e in events]

    # The final adapter and a checkpoint merge into the fp32 base, verified against peft.
    for extra, out in (([], "merged"), (["--checkpoint", "2"], "merged-2")):
        proc = run_cli("-w", ws, "merge", "amx", *extra, "-o", ws / "models" / out)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "verification passed" in proc.stdout
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(ws / "models" / "merged")
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.tensor([[1, 17, 300, 42]])
    with torch.no_grad():
        assert not torch.allclose(merged(input_ids=ids).logits, base(input_ids=ids).logits)


@pytest.mark.slow
def test_a_bf16_base_computes_the_real_model_s_loss_as_fp32_does(real_model, tmp_path, monkeypatch):
    """On SmolLM2-135M, the bf16-held base (as auto picks on an AMX CPU) gives the fp32 loss and
    its LoRA gradients, within bf16's rounding: the cheaper dtype does not train a different model."""
    import torch
    from transformers import AutoTokenizer

    from tuitune import hardware
    from tuitune.config import arguments as convert
    from tuitune.train.build import load_model

    tok = AutoTokenizer.from_pretrained(real_model)
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"},
                                    {"role": "assistant", "content": "The capital of France is Paris."}],
                                   tokenize=False)
    ids = tok(text, return_tensors="pt").input_ids
    results = {}
    for name, hw in (("bf16", CPU_AMX), ("fp32", CPU_PLAIN)):
        monkeypatch.setattr(hardware, "probe_hardware", lambda hw=hw: hw)
        (tmp_path / "configs").mkdir(exist_ok=True)
        cfg = load_config(write_config(tmp_path, name, **{"model": str(real_model), "training.precision": "auto",
                                                          "lora.modules_to_save": [], "lora.r": 8}),
                          workspace=tmp_path)
        torch.manual_seed(0)
        model = load_model(cfg, log=lambda m: None)
        # LoRA B starts at zero, so the loss is the base's; A's gradient is zero, B's is not.
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grad = next(p.grad for n, p in model.named_parameters() if "lora_B" in n)
        results[name] = (float(loss), grad.detach().clone().float(), next(model.parameters()).dtype)
        del model
    assert results["bf16"][2] == torch.bfloat16 and results["fp32"][2] == torch.float32
    assert abs(results["bf16"][0] - results["fp32"][0]) < 0.03 * results["fp32"][0]
    cos = torch.nn.functional.cosine_similarity(results["bf16"][1].flatten(), results["fp32"][1].flatten(), dim=0)
    assert cos > 0.98, float(cos)


@pytest.mark.parametrize("hw, detail", [
    (CPU_AMX, "auto picks bf16: this CPU has AMX (amx_bf16)"),
    (GPU_OLD, "auto picks fp16: Tesla T4 has no bf16"),
    (CPU_PLAIN, "auto picks fp32: no GPU, and this CPU has neither AMX nor AVX-512 bf16"),
])
def test_the_environment_step_says_what_auto_picks_and_why(monkeypatch, hw, detail):
    from tuitune import doctor
    from tuitune import hardware
    from tuitune.config import arguments as convert

    monkeypatch.setattr(hardware, "probe_hardware", lambda: hw)
    (row,) = doctor.check_precision()
    assert row.name == "precision" and row.status == "ok"
    assert row.detail.startswith(detail), row.detail


def test_tuitune_env_reports_this_machine_s_pick(tmp_path):
    proc = run_cli("env", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    picked, why = auto_precision()
    assert rows["precision"]["detail"].startswith(f"auto picks {picked}: {why}")


@pytest.mark.parametrize("forced, torch_name", [("bf16", "bfloat16"), ("fp32", "float32")])
def test_the_environment_variable_forces_both_outcomes_of_auto_on_any_box(tmp_path, tiny_model, monkeypatch,
                                                                          forced, torch_name):
    """Both outcomes of ``auto`` run on this box whatever its CPU: training's precision, chat's dtype,
    and what the Environment step says."""
    from tuitune.loading import load_model as load_for_chat

    monkeypatch.setenv("TUITUNE_AUTO_PRECISION", forced)
    picked, why = auto_precision()
    assert (picked, why) == (forced, f"TUITUNE_AUTO_PRECISION={forced} is set")
    # An explicit Hardware value is still judged on its own (the variable is about this machine).
    assert auto_precision(CPU_PLAIN)[0] == "fp32" and auto_precision(CPU_AMX)[0] == "bf16"
    cfg = _cfg(tmp_path, **{"training.precision": "auto", "lora.modules_to_save": []})
    assert resolve_precision(cfg) == forced
    assert model_dtype(cfg) == torch_name
    loaded = load_for_chat(str(tiny_model))
    assert loaded.dtype == torch_name
    assert {str(p.dtype) for p in loaded.model.parameters()} == {f"torch.{torch_name}"}
    proc = run_cli("env", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert rows["precision"]["detail"].startswith(f"auto picks {forced}: TUITUNE_AUTO_PRECISION={forced} is set")


def test_a_value_auto_cannot_pick_is_one_line(tmp_path, monkeypatch):
    from tuitune.errors import TuituneError

    monkeypatch.setenv("TUITUNE_AUTO_PRECISION", "fp8")
    with pytest.raises(TuituneError, match="TUITUNE_AUTO_PRECISION=fp8: use one of bf16, fp16, fp32"):
        auto_precision()
    cfg = _cfg(tmp_path, **{"training.precision": "fp32"})
    assert resolve_precision(cfg) == "fp32"  # an explicit precision never asks
