"""A chat and a merge of an unquantized model print nothing on stderr that tuitune did not write.

The noise of issue 11 ("Failed to load CPU gemm_4bit_forward from kernels-community ...")
comes from importing bitsandbytes, which peft does whenever it is installed; it prints only
on CPUs with AVX-512 bf16. So besides stderr being clean, these tests check with Python's
own ``-X importtime`` report that bitsandbytes never ran, which holds on every machine.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from merge_helpers import make_adapter

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -X importtime -m tuitune ARGS``: stdout, and stderr with the import report in it."""
    # Its own claims folder: alone on the machine, as a user's one chat is. Beside the suite's other
    # processes chat would rightly say on stderr that it shares the cores (tests/test_train_cores.py).
    env = {**os.environ, "TUITUNE_CORES_DIR": str(cwd / ".cores")}
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "tuitune", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env=env)


def _split(stderr: str) -> tuple[list[str], list[str]]:
    """(modules imported, the other stderr lines). ``import time:`` lines are Python's report."""
    modules, other = [], []
    for line in stderr.splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[-1].strip()
            if name != "imported package":  # the report's header row
                modules.append(name)
        elif line.strip():
            other.append(line)
    return modules, other


def _assert_clean(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules, other = _split(proc.stderr)
    assert "tuitune.cli" in modules  # the report is there, so its absence of bitsandbytes means something
    # Nothing of bitsandbytes was executed: a refused ``import bitsandbytes`` may be listed by
    # itself, but a real one imports its submodules (bitsandbytes.cextension, .functional, ...).
    loaded = [m for m in modules if m.startswith("bitsandbytes.")]
    assert not loaded, f"bitsandbytes was imported: {loaded[:5]}"
    # tuitune itself writes nothing to stderr on success (its progress goes to stdout; a failure
    # would be one `error:` line, and this run succeeded): every line here is a library's.
    assert other == [], "\n".join(other)


@pytest.fixture(scope="module")
def bf16_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model stored in bf16: a 16-bit model, as a real one would be."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("bf16") / "tiny-bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


def test_chat_prints_only_the_answer(bf16_model, tmp_path):
    proc = _run("chat", bf16_model, "--prompt", "hi", "--max-new-tokens", "4", cwd=tmp_path)
    _assert_clean(proc)
    assert proc.stdout.strip()  # the answer


def test_chat_with_an_adapter_prints_only_the_answer(bf16_model, tmp_path):
    # An adapter goes through peft's LoRA dispatch, which asks whether bitsandbytes can 4-bit.
    adapter = make_adapter(bf16_model, tmp_path / "adapter", r=2)
    proc = _run("chat", bf16_model, "--adapter", adapter, "--prompt", "hi", "--max-new-tokens", "4", cwd=tmp_path)
    _assert_clean(proc)
    assert proc.stdout.strip()


def test_merge_of_a_16_bit_model_prints_nothing_on_stderr(bf16_model, tmp_path):
    adapter = make_adapter(bf16_model, tmp_path / "adapter", r=2)
    proc = _run("merge", adapter, "-o", tmp_path / "merged", cwd=tmp_path)
    _assert_clean(proc)
    assert "verification passed" in proc.stdout  # the peft-side verification ran too
    assert (tmp_path / "merged" / "config.json").is_file()


def test_quantizing_after_an_unquantized_load_still_finds_bitsandbytes(tiny_model):
    """In one process (the TUI's chat), a 16-bit load hides bitsandbytes; a later 4-bit load gets it back."""
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    code = f"""
import sys, torch
from tuitune.hardware import allow_bitsandbytes, keep_bitsandbytes_out
keep_bitsandbytes_out()
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
get_peft_model(AutoModelForCausalLM.from_pretrained({str(tiny_model)!r}), LoraConfig(target_modules="all-linear"))
assert sys.modules["bitsandbytes"] is None
allow_bitsandbytes()
q = AutoModelForCausalLM.from_pretrained({str(tiny_model)!r}, quantization_config=BitsAndBytesConfig(
    load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32))
pm = get_peft_model(q, LoraConfig(target_modules="all-linear"))
kinds = {{type(m).__name__ for n, m in pm.named_modules() if n.endswith("q_proj")}}
assert kinds == {{"Linear4bit"}}, kinds
print("OK", float(pm(input_ids=torch.tensor([[1, 2, 3]])).logits.abs().sum()) > 0)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0 and "OK True" in proc.stdout, proc.stderr[-3000:]


def test_after_a_merge_in_the_same_process_the_qlora_check_still_finds_bitsandbytes(tiny_model, tmp_path):
    """The TUI merges in its own process; its Config step's QLoRA check must not then find
    bitsandbytes missing."""
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed")
    adapter = make_adapter(tiny_model, tmp_path / "adapter", r=2)
    code = f"""
import sys
from tuitune.merge import merge
from tuitune.sources import resolve
merge(resolve({str(adapter)!r}, {str(tmp_path)!r}, need="adapter"), {str(tmp_path / "out")!r}, verify_result=False)
assert sys.modules.get("bitsandbytes", 0) is None, "the merge imported bitsandbytes"
from tuitune.doctor import check_bitsandbytes
(row,) = check_bitsandbytes()
print("STATUS", row.status, row.detail)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4-bit works on" in proc.stdout, proc.stdout


def test_a_lora_run_s_worker_never_imports_bitsandbytes_or_deepspeed(tiny_model, tmp_path):
    """The worker hides bitsandbytes before anything imports peft (its stall watchdog's TrainerCallback
    does, through transformers.trainer_utils): it imported it, 1.1 s of the worker's 6 s start. And a
    run without distributed.deepspeed never imports DeepSpeed (accelerate's unwrap_model did, 0.3 s,
    with deepspeed's "Setting accelerator to CPU. If you have GPU ... unable to detect it" in train.log)."""
    from train_helpers import make_workspace, write_config

    ws = make_workspace(tmp_path / "ws", tiny_model)
    write_config(ws, "quick", **{"training.max_steps": 1, "evaluation.prompts": [], "training.save_steps": 100})
    env = {**os.environ, "TUITUNE_CORES_DIR": str(tmp_path / ".cores"), "PYTHONPROFILEIMPORTTIME": "1"}
    proc = subprocess.run([sys.executable, "-m", "tuitune", "train", "configs/quick.yaml", "--foreground", "--name", "q"],
                          cwd=ws, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (ws / "runs" / "q" / "train.log").read_text()
    modules, _ = _split(log)   # the worker's own import report (its output goes to train.log)
    assert "tuitune.train.build" in modules
    loaded = [m for m in modules if m.startswith("bitsandbytes.")]
    assert not loaded, f"the worker imported bitsandbytes: {loaded[:5]}"
    assert "gemm_4bit" not in log
    loaded = [m for m in modules if m.startswith("deepspeed.")]
    assert not loaded, f"the worker imported deepspeed: {loaded[:5]}"
    assert "Setting accelerator" not in log and "real_accelerator" not in log
