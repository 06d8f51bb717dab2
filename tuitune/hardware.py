"""The machine and the dtypes: what the hardware computes natively, the precision ``auto`` picks,
the one dtype table and ``BitsAndBytesConfig`` builder, and keeping bitsandbytes out of
processes that quantize nothing. Light: torch only inside the probes."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

from tuitune.errors import TuituneError

if TYPE_CHECKING:  # annotations only: the config imports this module, not the reverse
    from tuitune.config.schema import RunConfig


@dataclass(frozen=True)
class Hardware:
    """What decides ``precision: auto``: the GPU, and where there is none, the CPU's bf16 units.

    ``cpu_bf16`` names the evidence that the CPU computes bf16 natively (e.g. ``"AMX (amx_bf16)"``),
    empty where it does not. Tests build one by hand instead of probing the machine.
    """
    cuda: bool = False
    cuda_bf16: bool = False
    gpu_name: str = ""
    cpu_bf16: str = ""


#: The precision names of configs and CLI flags, and torch's names for them: the one table.
DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def torch_dtype(name):
    """``torch.bfloat16`` for "bf16" (or "bfloat16"), and so on; a torch dtype is returned as is."""
    import torch

    return getattr(torch, DTYPE_NAMES.get(name, name)) if isinstance(name, str) else name


def bnb_config(bits: int, compute_dtype: str, quant_type: str = "nf4", double_quant: bool = True):
    """``transformers.BitsAndBytesConfig`` for 4- or 8-bit weights: the one builder (training's
    QLoRA and chat's ``--bits``). ``compute_dtype`` as in DTYPE_NAMES, either spelling, or a torch dtype."""
    from transformers import BitsAndBytesConfig

    allow_bitsandbytes()
    dtype = torch_dtype(compute_dtype)
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, bnb_4bit_quant_type=quant_type,
                                  bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=dtype)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=dtype)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform``'s answer where there is none)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The flags /proc/cpuinfo lists for this CPU (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _torch_cpu_probe(name: str) -> bool:
    """torch's own CPUID probe (``torch.cpu._is_amx_tile_supported`` etc.), False where it has none.

    They are what oneDNN dispatches on, and they also work where there is no /proc/cpuinfo (macOS,
    Windows); the AMX one also asks the kernel for the AMX state, so a kernel without AMX support
    answers False even when the CPU has the flag.
    """
    try:
        import torch

        fn = getattr(torch.cpu, name, None)
        return bool(fn()) if fn is not None else False
    except Exception:
        return False


def cpu_bf16_evidence(flags: set[str] | None = None, torch_probe=None) -> str:
    """Why this CPU computes bf16 natively ("AMX (amx_bf16)", "AVX-512 bf16 (avx512_bf16)"), or "".

    The /proc/cpuinfo flags where there are some, else torch's probe. Without AMX or AVX-512
    bf16, oneDNN converts bf16 to fp32 and back around every kernel: on an AVX-512 Xeon without
    them a (2048x576)@(576x1536) matmul ran at 18 GFLOP/s in bf16 against 56 in fp32.
    """
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return "AMX (amx_bf16)"
    if "avx512_bf16" in flags:
        return "AVX-512 bf16 (avx512_bf16)"
    if flags:
        # The flags are the CPU's own CPUID answer: without either, torch's probe cannot find one
        # either, and importing torch to ask costs the CLI 2-3 s and ~400 MB.
        return ""
    probe = _torch_cpu_probe if torch_probe is None else torch_probe
    if probe("_is_amx_tile_supported"):
        return "AMX (torch.cpu reports AMX tiles)"
    if probe("_is_avx512_bf16_supported"):
        return "AVX-512 bf16 (torch.cpu reports it)"
    return ""


@lru_cache(maxsize=1)
def probe_hardware() -> Hardware:
    """This machine, probed once per process (torch is imported only where a GPU driver is loaded
    or the CPU's flags cannot be read)."""
    from tuitune.gpus import gpu_driver_present

    cuda = bf16 = False
    name = ""
    try:
        if not gpu_driver_present():
            raise ImportError("no GPU driver: torch would see no GPU")
        import torch

        cuda = bool(torch.cuda.is_available())
        if cuda:
            bf16 = bool(torch.cuda.is_bf16_supported())
            name = torch.cuda.get_device_name(0)
    except Exception:
        pass
    return Hardware(cuda=cuda, cuda_bf16=bf16, gpu_name=name, cpu_bf16="" if cuda else cpu_bf16_evidence())


#: Forces what ``precision: auto`` picks on this machine (bf16, fp16 or fp32), whatever its hardware:
#: the test suite sets fp32 so numbers and generated text are the same on every CPU, and a bench
#: sets each value in turn to measure both outcomes on one box.
AUTO_PRECISION_ENV = "TUITUNE_AUTO_PRECISION"


def forced_auto_precision() -> str:
    """The precision :data:`AUTO_PRECISION_ENV` forces ("" when unset); a value it cannot be is one line."""
    value = os.environ.get(AUTO_PRECISION_ENV, "").strip().lower()
    if value and value not in DTYPE_NAMES:
        raise TuituneError(f"{AUTO_PRECISION_ENV}={value}: use one of {', '.join(DTYPE_NAMES)}, or unset it "
                           "to let precision: auto follow the hardware")
    return value


def auto_precision(hw: Hardware | None = None) -> tuple[str, str]:
    """What ``precision: auto`` picks on ``hw`` (this machine by default), and why, in words.

    On this machine (``hw`` None), :data:`AUTO_PRECISION_ENV` overrides the hardware's answer.
    """
    if hw is None and (forced := forced_auto_precision()):
        return forced, f"{AUTO_PRECISION_ENV}={forced} is set"
    hw = probe_hardware() if hw is None else hw
    gpu = hw.gpu_name or "the GPU"
    if hw.cuda:
        if hw.cuda_bf16:
            return "bf16", f"{gpu} has bf16"
        return "fp16", f"{gpu} has no bf16 (older than Ampere), so fp16 with loss scaling"
    if hw.cpu_bf16:
        return "bf16", f"this CPU has {hw.cpu_bf16}"
    return "fp32", "no GPU, and this CPU has neither AMX nor AVX-512 bf16"


def resolve_precision(cfg: RunConfig, hw: Hardware | None = None) -> str:
    """``training.precision`` made concrete: ``auto`` is :func:`auto_precision`; the rest is as written."""
    if cfg.training.precision != "auto":
        return cfg.training.precision
    return auto_precision(hw)[0]


def resolve_compute_dtype(cfg: RunConfig, hw: Hardware | None = None) -> str:
    """QLoRA's compute dtype: ``auto`` follows what ``precision: auto`` picks on this machine."""
    q = cfg.quantization.compute_dtype
    if q != "auto":
        return q
    return DTYPE_NAMES[auto_precision(hw)[0]]


def uses_autocast(cfg: RunConfig, hw: Hardware | None = None) -> bool:
    """Whether training runs under ``torch.autocast`` (TrainingArguments ``bf16``/``fp16``).

    What is held in which dtype (see :func:`to_model_kwargs` and ``build.load_model``): a frozen
    LoRA base in the 16-bit type, trainable weights (LoRA A/B, ``modules_to_save``, full
    fine-tuning masters) in fp32.

    - GPU, 16-bit: autocast on. It runs the fp32 LoRA (and full fine-tuning's fp32 master)
      matmuls in 16-bit on the tensor cores; it is also what turns on fp16's loss scaling,
      which refuses fp16 gradients, one more reason the trainable weights are fp32.
    - CPU, LoRA on a 16-bit base: no autocast (LLaMA-Factory's CPU recipe). The base's
      matmuls are bf16 by their weights' dtype already; autocast would add a dispatch and a
      cast per op and a bf16 copy of each fp32 LoRA weight and its input every step, to speed
      up matmuls of rank r that cost next to nothing, and would put the LoRA path's gradients
      in bf16. On an AMX CPU issue 11 measured SmolLM2-135M (LoRA r16 all-linear, batch 16,
      length 128, checkpointing) at 182 tokens/s with autocast against 209 for LLaMA-Factory
      without; on a 2-core AVX-512 box without bf16 units (where auto picks fp32) the two came
      out 8.3 vs 7.2 tokens/s under heavy load from other processes, within its noise, with
      the same memory (peak 2.19 vs 2.15 GB), so nothing there argues for autocast.
      LoRA's ``modules_to_save`` are fp32 too; ``build.bridge_dtypes`` casts around them.
    - CPU, full fine-tuning and QLoRA in 16-bit: their weights outside the 4-bit layers are
      fp32 (full fine-tuning's masters; peft's ``prepare_model_for_kbit_training`` upcasts the
      rest), so autocast is the only way their matmuls run in bf16: on.
    - fp32: off.
    """
    precision = resolve_precision(cfg, hw)
    if precision == "fp32":
        return False
    hw = probe_hardware() if hw is None else hw
    return hw.cuda or cfg.method != "lora"


# --- bitsandbytes only when quantizing ------------------------------------------------------
#
# peft imports bitsandbytes whenever it is installed: ``peft/helpers.py`` does it at
# ``import peft`` (which ``transformers.set_seed`` and the Trainer import too), and LoRA's
# layer dispatch calls ``is_bnb_4bit_available()``, which imports it. bitsandbytes then prints
# "Failed to load CPU gemm_4bit_forward from kernels-community ..." on every CPU with
# AVX-512 bf16 (its CPU backend looks for the optional ``kernels`` package at import), and
# takes its own import time and memory, in a process that quantizes nothing. Neither library
# has a switch for it, so a process that will not quantize puts None in
# ``sys.modules["bitsandbytes"]``: Python's documented way to make an import fail with
# ImportError (peft then binds ``bnb = None``), and ``importlib.util.find_spec`` answers None,
# which is how peft and transformers decide that bitsandbytes is not installed.

_BNB = "bitsandbytes"
_hidden = False  # whether the None in sys.modules is ours (keep_bitsandbytes_out)

#: The optimizers (``training.optimizer``) that are not bitsandbytes': everything else (paged_*,
#: *_8bit, *_bnb, lion, ademamix ...) may need it, so the worker leaves it importable then.
NON_BNB_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop")


def needs_bitsandbytes(cfg: RunConfig) -> bool:
    """Whether a training run on ``cfg`` may import bitsandbytes (QLoRA, or one of its optimizers)."""
    return cfg.method == "qlora" or cfg.training.optimizer not in NON_BNB_OPTIMIZERS


def keep_bitsandbytes_out() -> None:
    """Make this process treat bitsandbytes as absent, unless something already imported it.

    For processes that quantize nothing (chat without --bits, merge, a LoRA/full run); undone
    by :func:`allow_bitsandbytes` where a later load in the same process quantizes.
    """
    global _hidden
    if _BNB not in sys.modules:
        sys.modules[_BNB] = None  # type: ignore[assignment]
        _hidden = True


def allow_bitsandbytes() -> None:
    """Undo :func:`keep_bitsandbytes_out` before quantizing (a no-op where it was never done).

    The answers that peft and transformers cached while it was hidden are cleared, and the
    modules that bound ``bnb`` at their import get it now.
    """
    global _hidden
    if not _hidden:  # a None put there by someone else (a test hiding bitsandbytes) stays
        return
    _hidden = False
    if sys.modules.get(_BNB, 0) is not None:
        return
    del sys.modules[_BNB]
    import importlib

    caches = (("peft.import_utils", ("is_bnb_available", "is_bnb_4bit_available")),
              ("transformers.utils.import_utils", ("is_bitsandbytes_available",)),
              ("transformers.utils", ("is_bitsandbytes_available",)))
    for mod_name, names in caches:
        mod = sys.modules.get(mod_name)
        for name in names:
            clear = getattr(getattr(mod, name, None), "cache_clear", None)
            if clear is not None:
                clear()
    helpers = sys.modules.get("peft.helpers")
    if helpers is not None and getattr(helpers, "bnb", 0) is None:
        import bitsandbytes

        helpers.bnb = bitsandbytes
    for name in ("transformers.integrations.bitsandbytes",):
        mod = sys.modules.get(name)
        if mod is not None and not hasattr(mod, "bnb"):
            importlib.reload(mod)


def keep_deepspeed_out() -> None:
    """Make a training process that does not use DeepSpeed treat it as absent.

    accelerate's ``unwrap_model`` (which the Trainer calls when it is built) imports ``deepspeed``
    wherever it is installed, with no switch: 0.3 s of a worker's start and, on a box without a
    GPU, deepspeed's "Setting accelerator to CPU. If you have GPU or other accelerator, we were
    unable to detect it." in train.log. The same None in ``sys.modules`` as for bitsandbytes above:
    ``find_spec`` then answers None, which is how accelerate, transformers and TRL decide that
    DeepSpeed is not installed. For the worker of a run with ``distributed.deepspeed: none``, before
    it imports them; something that already imported it keeps it.
    """
    sys.modules.setdefault("deepspeed", None)  # type: ignore[arg-type]


class BnbProbe(NamedTuple):
    """What bitsandbytes' 4-bit quantization does on this machine: the doctor's row and qlora's config check."""
    status: str          # ok | warn | fail
    detail: str
    fix: str = ""


def probe_bitsandbytes() -> BnbProbe:
    """A 4-bit round trip (quantize, dequantize) on each device; takes seconds."""
    import contextlib
    import importlib.metadata as md

    try:
        version = md.version("bitsandbytes")
    except md.PackageNotFoundError:
        return BnbProbe("warn", "not installed: QLoRA (4-bit) and 8-bit loading are unavailable",
                        "pip install bitsandbytes")
    allow_bitsandbytes()  # this process may have hidden it for an unquantized chat or merge
    try:
        import torch
        with contextlib.redirect_stdout(sys.stderr):
            import bitsandbytes.functional as F
    except Exception as exc:
        return BnbProbe("fail", f"bitsandbytes {version} does not import: {exc}",
                        "pip install -U bitsandbytes; on a GPU box its CUDA libraries must match torch's CUDA")
    works, broken = [], []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        try:
            x = torch.randn(64, 64, device=dev)
            q, state = F.quantize_4bit(x, quant_type="nf4")
            y = F.dequantize_4bit(q, state)
            if float((x - y).abs().mean()) > 0.2:
                raise RuntimeError("round trip is wrong")
            works.append(dev.upper())
        except Exception as exc:
            broken.append(f"{dev.upper()} ({' '.join(str(exc).split())})")
    if "CUDA" in works:
        return BnbProbe("ok", f"bitsandbytes {version}: 4-bit works on {', '.join(works)}")
    if works:
        detail = f"bitsandbytes {version}: 4-bit works on {', '.join(works)} only"
        if broken:
            detail += f"; fails on {', '.join(broken)}"
        return BnbProbe("warn", detail, "QLoRA runs here with compute dtype float32 (slow); on a GPU box it uses CUDA")
    return BnbProbe("fail", f"bitsandbytes {version}: no working 4-bit backend ({'; '.join(broken)})",
                    "pip install -U bitsandbytes (its wheel must match torch's CUDA), or use `method: lora`")
