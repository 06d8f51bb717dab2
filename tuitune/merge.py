"""Adapter + base → a standalone model, shard by shard, verified equal.

``merge()`` takes a LoRA adapter (a run's final ``adapter/``, one of its checkpoints, or
any PEFT adapter folder) and its base model and writes a Hugging Face model folder that
loads with ``AutoModelForCausalLM.from_pretrained`` without peft: safetensors shards and
their index, ``config.json``, ``generation_config.json``, the tokenizer with its chat
template (from the adapter folder when it was saved there, else from the base) and a
model card (``README.md`` + ``tuitune-merge.json``).

**Streaming.** The base is read one safetensors shard at a time with ``safe_open``; each
target weight gets its LoRA delta ``B @ A * scale`` (scale ``alpha / r``, or
``alpha / sqrt(r)`` with rsLoRA; transposed for ``fan_in_fan_out``; LoRA-B biases and
embedding LoRA too), full tensors the adapter saved (``modules_to_save``, trained
biases) replace the base's, and each merged tensor is written to its output shard as soon as
it is made (``_ShardWriter``: the header first, then the bytes, tensor by tensor). The
input is read through a 256 MB window of its memory map (``_ShardReader``), so peak memory
is about the largest tensor (in float32, with its delta), that window and the adapter,
never a whole shard, let alone the model. No library streams this (peft's ``merge_and_unload`` needs the whole model in
memory), so the delta arithmetic below is written by hand, following peft's
``LoraLayer.get_delta_weight``; peft itself is the reference the result is checked
against. Layouts that cannot be streamed (DoRA and other PEFT methods, ``.bin``
checkpoints, keys that do not map onto the base's tensors) fall back to peft's
``merge_and_unload`` + ``save_pretrained``, and the result says so.

**Tied embeddings.** A base with ``tie_word_embeddings`` stores one matrix for the input
embeddings and the output head. When the adapter changes one and not the other (say
``lm_head`` in ``modules_to_save``, or LoRA on ``embed_tokens``), peft's forward uses two
different matrices; the merged model then unties them in ``config.json`` and writes
both. When both come out identical (``ensure_weight_tying``) the model stays tied.

**QLoRA.** A QLoRA adapter was trained against the 4-bit quantized base, but it is merged
into the 16-bit base weights on disk, never into 4-bit weights: a 4-bit matrix cannot
hold ``W + BA`` (re-quantizing would round away most of the small LoRA delta and stack
a second quantization error), and a merged 16-bit model is what every loader and
quantizer expects to start from. The 16-bit merge differs from the 4-bit training
forward only by the base's own quantization error. A base folder that is itself stored
quantized is refused, with the fix (point ``--base`` at the 16-bit original).

**Verification.** Before the output is renamed into place, the logits of the merged
model and of base + adapter under peft on a few prompts are compared within a
tolerance for the dtype; the figures are printed and stored in the model card.
Neither model is loaded whole: both are built on the meta device and stream their
weights from the safetensors files module by module during the forward pass (accelerate's
offload hooks), so verification, like the merge, needs about one layer's memory and runs
on a box with less RAM than the model. ``verify_result=False`` skips it.

Output appears only when complete: everything is written to ``OUT.partial-XXXX`` beside
``OUT`` and renamed at the end; a failure removes the partial folder.

This module is headless and light to import: torch, safetensors, transformers and peft
are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tuitune.config.convert import DTYPE_NAMES as _TORCH_DTYPE
from tuitune.errors import TuituneError
from tuitune.fsutil import atomic_write_json, atomic_write_text, fix_modes, make_temp_dir, publish_dir, refuse_existing

DTYPES = ("fp16", "bf16", "fp32")
_FROM_TORCH = {v: k for k, v in _TORCH_DTYPE.items()}
#: Max |merged - reference| / max(1, max |reference|) allowed per dtype.
TOLERANCE = {"fp32": 1e-4, "bf16": 6e-2, "fp16": 1e-2}
DEFAULT_PROMPTS = ("Hello! Who are you?", "请介绍一下你自己", "What is LoRA?")

#: Tokenizer files copied beside the weights.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt", "tokenizer.model",
                   "vocab.txt", "spiece.model")
CARD_JSON = "tuitune-merge.json"
ADAPTER_PREFIX = "base_model.model."

Progress = Callable[[int, int, int, int], None]


# --- sizes -------------------------------------------------------------------------------

def parse_size(text: str | int) -> int:
    """``"2GB"`` → bytes (decimal units, as transformers' ``max_shard_size``; ``GiB`` binary)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*", str(text), flags=re.I)
    if not m:
        raise TuituneError(f"--max-shard-size {text!r}: write a size such as 500MB, 2GB or 1GiB")
    num, unit = float(m.group(1)), m.group(2).upper()
    mult = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9, "T": 1e12, "TB": 1e12,
            "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}.get(unit)
    if mult is None or num <= 0:
        raise TuituneError(f"--max-shard-size {text!r}: write a size such as 500MB, 2GB or 1GiB")
    return int(num * mult)


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# --- where things are ----------------------------------------------------------------------

@dataclass
class Source:
    """What to merge: an adapter folder, its base, and where it came from."""

    adapter_dir: Path
    base_dir: Path
    run_dir: Path | None = None
    checkpoint: int | None = None
    method: str | None = None           # lora / qlora, from the run's config
    config_path: Path | None = None     # the run's config.yaml
    data_files: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)

    @property
    def tokenizer_dir(self) -> Path:
        """The adapter's own tokenizer (saved with it by training) if there, else the base's."""
        if (self.adapter_dir / "tokenizer_config.json").is_file() or (self.adapter_dir / "tokenizer.json").is_file():
            return self.adapter_dir
        return self.base_dir

    def label(self) -> str:
        if self.run_dir is not None:
            what = f"checkpoint {self.checkpoint}" if self.checkpoint is not None else "final adapter"
            return f"run {self.run_dir.name} ({what})"
        return str(self.adapter_dir)


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TuituneError(f"{path}: not found; {what}") from None
    except (OSError, ValueError) as exc:
        raise TuituneError(f"{path}: unreadable ({exc}); {what}") from None


def _run_config(run_dir: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _local_base(name: str | None, *roots: Path) -> Path | None:
    if not name:
        return None
    p = Path(name).expanduser()
    for cand in ([p] if p.is_absolute() else [r / p for r in roots if r is not None] + [p]):
        if (cand / "config.json").is_file():
            return cand.resolve()
    return None


def resolve_source(workspace: str | Path, what: str, base: str | None = None,
                   checkpoint: int | None = None) -> Source:
    """A run id (its final adapter, or ``checkpoint``) or an adapter folder, with its base."""
    from tuitune.train.runfolder import RunFolder, find_run

    workspace = Path(workspace)
    p = Path(what).expanduser()
    run: RunFolder | None = None
    if p.is_dir() and not (p / "state.json").exists() and not (p / "config.yaml").exists():
        adapter = p.resolve()
        if checkpoint is not None:
            raise TuituneError("--checkpoint goes with a run id, not an adapter folder; "
                               "give the checkpoint's folder instead")
    else:
        if not p.exists() and (os.sep in what or what.startswith(".")) and not (workspace / "runs" / what).is_dir():
            raise TuituneError(f"{what}: no such folder; give a run id (see `tuitune runs`) or an adapter folder")
        run = find_run(workspace, what)
        if checkpoint is not None:
            adapter = run.checkpoints / f"checkpoint-{checkpoint}"
            if not adapter.is_dir():
                have = ", ".join(c.name.rsplit("-", 1)[-1] for c in run.list_checkpoints()) or "none"
                raise TuituneError(f"run {run.id} has no checkpoint {checkpoint}; checkpoints: {have}")
        else:
            adapter = run.adapter_dir
            if not adapter.is_dir():
                if run.model_dir.is_dir():
                    raise TuituneError(f"run {run.id} is a full fine-tune: {run.model_dir} is already a "
                                       "standalone model, there is no adapter to merge")
                cps = run.list_checkpoints()
                hint = f"; merge a checkpoint with --checkpoint {cps[-1].name.rsplit('-', 1)[-1]}" if cps else ""
                raise TuituneError(f"run {run.id} has no final adapter ({adapter} is missing: the run has not "
                                   f"finished){hint}")
    if not (adapter / "adapter_config.json").is_file():
        raise TuituneError(f"{adapter}: no adapter_config.json, so this is not a PEFT adapter folder; give a run id "
                           "or the folder `save_pretrained` wrote for the adapter")
    acfg = _read_json(adapter / "adapter_config.json", "save the adapter again with save_pretrained")
    src = Source(adapter_dir=adapter, base_dir=Path("."))
    rcfg: dict = {}
    if run is not None:
        src.run_dir, src.checkpoint = run.path, checkpoint
        rcfg = _run_config(run.path)
        if (run.path / "config.yaml").is_file():
            src.config_path = run.path / "config.yaml"
        src.method = rcfg.get("method")
        data = rcfg.get("data") or {}
        src.data_files = [str(data[k]) for k in ("train", "eval") if data.get(k)]
        src.prompts = [str(x) for x in ((rcfg.get("evaluation") or {}).get("prompts") or [])]
    ws_root = run.path.parent.parent if run is not None else workspace
    if base:
        b = _local_base(base, Path.cwd(), workspace)
        if b is None:
            raise TuituneError(f"--base {base}: no model folder with config.json there; give the folder of the "
                               "base model the adapter was trained on")
    else:
        named = acfg.get("base_model_name_or_path")
        b = (_local_base(rcfg.get("model"), ws_root) or _local_base(named, adapter, ws_root, workspace))
        if b is None:
            raise TuituneError(f"{adapter / 'adapter_config.json'}: base model {named!r} is not a local folder; "
                               "download it and pass --base DIR")
    src.base_dir = b
    return src


# --- reading the adapter and the base -----------------------------------------------------

@dataclass
class _Lora:
    module: str                      # base module name, e.g. model.layers.0.self_attn.q_proj
    A: object = None
    B: object = None
    B_bias: object = None
    embedding: bool = False


@dataclass
class Plan:
    """What the streaming merge will do, worked out from headers before any weight is read."""

    shards: list[str]                          # base shard file names, in order
    keys_by_shard: dict[str, list[str]]
    shapes: dict[str, tuple]                   # base key → shape
    dtypes: dict[str, str]                     # base key → safetensors dtype string
    loras: dict[str, _Lora]                    # base weight/bias key → LoRA parts
    replace: dict[str, object]                 # base key → full tensor from the adapter
    extra: dict[str, object]                   # keys the base does not store (an untied lm_head)
    untie: bool = False
    fallback: str | None = None                # why the layout can't be streamed


def _is_lora_config(acfg: dict) -> str | None:
    """None when peft's LoRA layout is streamable, else the reason."""
    if acfg.get("peft_type", "LORA") != "LORA":
        return f"{acfg.get('peft_type')} adapters"
    for key, why in (("use_dora", "DoRA"), ("layer_replication", "layer replication"),
                     ("target_parameters", "LoRA on parameters"), ("trainable_token_indices", "trainable tokens"),
                     ("alora_invocation_tokens", "aLoRA"), ("use_qalora", "QA-LoRA"), ("use_bdlora", "BD-LoRA")):
        if acfg.get(key):
            return why
    return None


def _pattern(patterns: dict, module: str, default):
    """peft's ``get_pattern_key``: the first pattern that matches the module name's end."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _scale(acfg: dict, module: str, rank: int) -> float:
    alpha = _pattern(acfg.get("alpha_pattern"), module, acfg.get("lora_alpha", 8))
    return alpha / math.sqrt(rank) if acfg.get("use_rslora") else alpha / rank


def _base_index(base: Path) -> tuple[list[str], dict[str, str]]:
    """(shard files in order, key → shard) of a safetensors base, or ([], {}) if it has none."""
    idx = base / "model.safetensors.index.json"
    if idx.is_file():
        wm = _read_json(idx, "the base's index is damaged; download the model again").get("weight_map", {})
        shards = list(dict.fromkeys(sorted(set(wm.values()))))
        return shards, dict(wm)
    single = base / "model.safetensors"
    if single.is_file():
        return [single.name], {}
    return [], {}


def _embed_key(keys) -> str | None:
    for suffix in ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight"):
        hits = [k for k in keys if k.endswith(suffix)]
        if len(hits) == 1:
            return hits[0]
    return None


def make_plan(src: Source, out_dtype: str | None = None) -> Plan:
    """Read headers of the base and the whole adapter; check every shape; decide what to do."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    acfg = _read_json(src.adapter_dir / "adapter_config.json", "save the adapter again with save_pretrained")
    bcfg = _read_json(src.base_dir / "config.json", "the base model folder is incomplete")
    if bcfg.get("quantization_config"):
        method = bcfg["quantization_config"].get("quant_method", "quantized")
        raise TuituneError(f"{src.base_dir}: the base is stored quantized ({method}); merge into the 16-bit "
                           "original instead: pass --base with the unquantized model folder")
    shards, weight_map = _base_index(src.base_dir)
    plan = Plan(shards=shards, keys_by_shard={}, shapes={}, dtypes={}, loras={}, replace={}, extra={})
    if not shards:
        plan.fallback = "the base has no safetensors weights"
    for shard in shards:
        path = src.base_dir / shard
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
                for k in keys:
                    sl = f.get_slice(k)
                    plan.shapes[k] = tuple(sl.get_shape())
                    plan.dtypes[k] = sl.get_dtype()
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise TuituneError(f"{path}: cannot read ({exc}); download the base model again") from None
        plan.keys_by_shard[shard] = keys
    reason = _is_lora_config(acfg)
    if reason:
        plan.fallback = plan.fallback or f"{reason} are merged by peft, not streamed"
    weights = src.adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        if (src.adapter_dir / "adapter_model.bin").is_file():
            plan.fallback = plan.fallback or "the adapter is saved as .bin, not safetensors"
            return plan
        raise TuituneError(f"{src.adapter_dir}: no adapter_model.safetensors; save the adapter again with "
                           "save_pretrained")
    try:
        tensors = load_file(str(weights))
    except Exception as exc:
        raise TuituneError(f"{weights}: cannot read ({exc}); save the adapter again") from None
    if plan.fallback:
        return plan
    fifo = bool(acfg.get("fan_in_fan_out"))
    base_keys = plan.shapes
    tied = bool(bcfg.get("tie_word_embeddings", True)) and "lm_head.weight" not in base_keys
    embed = _embed_key(base_keys)

    def source_key(key: str) -> str | None:
        """The base tensor a module's weight is read from (an absent tied lm_head reads the embeddings)."""
        if key in base_keys:
            return key
        if key == "lm_head.weight" and tied and embed:
            return embed
        return None

    def mismatch(adapter_key: str, got, base_key: str, want) -> TuituneError:
        return TuituneError(
            f"{weights}: tensor {adapter_key} has shape {list(got)} but the base's {base_key} is {list(want)} "
            f"in {src.base_dir}: the adapter was trained on another base; pass --base with that model")

    for key in sorted(tensors):
        if not key.startswith(ADAPTER_PREFIX):
            plan.fallback = f"adapter key {key} has an unknown prefix"
            return plan
        name = key[len(ADAPTER_PREFIX):].replace(".base_layer.", ".")
        t = tensors[key]
        m = re.fullmatch(r"(.+)\.(lora_A|lora_B)\.(weight|bias)|(.+)\.(lora_embedding_A|lora_embedding_B)", name)
        if m:
            module = m.group(1) or m.group(4)
            part = m.group(2) or m.group(5)
            target = source_key(f"{module}.weight")
            if target is None:
                plan.fallback = f"LoRA module {module} has no weight in the base's checkpoint"
                return plan
            lo = plan.loras.setdefault(f"{module}.weight", _Lora(module))
            if part == "lora_A":
                lo.A = t
            elif part == "lora_B" and m.group(3) == "bias":
                lo.B_bias = t
            elif part == "lora_B":
                lo.B = t
            elif part == "lora_embedding_A":
                lo.A, lo.embedding = t, True
            else:
                lo.B, lo.embedding = t, True
            continue
        target = source_key(name)
        if target is None:
            plan.fallback = f"adapter tensor {key} has no counterpart in the base's checkpoint"
            return plan
        if tuple(t.shape) != plan.shapes[target]:
            raise mismatch(key, t.shape, target, plan.shapes[target])
        if name in base_keys:
            plan.replace[name] = t
        else:
            plan.extra[name] = t          # an lm_head trained in full on a tied base
    for wkey, lo in plan.loras.items():
        target = source_key(wkey)
        want = plan.shapes[target]
        if lo.A is None or lo.B is None:
            plan.fallback = f"LoRA module {lo.module} is missing lora_A or lora_B"
            return plan
        if lo.embedding:
            got = (lo.A.shape[1], lo.B.shape[0])          # A: r x vocab, B: dim x r
        else:
            got = (lo.B.shape[0], lo.A.shape[1])          # B: out x r, A: r x in
            if fifo:
                got = got[::-1]
        if lo.A.shape[0] != lo.B.shape[-1] or tuple(got) != tuple(want):
            bad = f"{ADAPTER_PREFIX}{lo.module}.{'lora_embedding_B' if lo.embedding else 'lora_B.weight'}"
            raise mismatch(bad, lo.B.shape, target, want)
        if lo.B_bias is not None:
            bkey = f"{lo.module}.bias"
            if bkey not in base_keys:
                plan.fallback = f"LoRA bias on {lo.module}, whose base layer has no bias"
                return plan
    # Tied embeddings: the LoRA on an absent lm_head goes onto an untied copy of the embeddings.
    if "lm_head.weight" in plan.loras and "lm_head.weight" not in base_keys:
        plan.extra.setdefault("lm_head.weight", None)
    if tied and embed and "lm_head.weight" in plan.extra or (tied and embed and embed in plan.loras | plan.replace):
        head = _final_tensor(src, plan, "lm_head.weight", embed, acfg)
        emb = _final_tensor(src, plan, embed, embed, acfg)
        if torch.equal(head, emb):
            plan.extra.pop("lm_head.weight", None)
            plan.loras.pop("lm_head.weight", None)
        else:
            plan.untie = True
            plan.extra["lm_head.weight"] = head
            plan.loras.pop("lm_head.weight", None)
    plan.acfg = acfg  # type: ignore[attr-defined]
    return plan


def _read_base_tensor(src: Source, plan: Plan, key: str):
    from safetensors import safe_open

    for shard, keys in plan.keys_by_shard.items():
        if key in keys:
            with safe_open(str(src.base_dir / shard), framework="pt") as f:
                return f.get_tensor(key)
    raise KeyError(key)


def _final_tensor(src: Source, plan: Plan, key: str, source: str, acfg: dict):
    """The merged value of one tensor, in float32 (used for the tie decision)."""
    t = plan.replace.get(key)
    if t is None:
        t = plan.extra.get(key)
    if t is None:
        t = _read_base_tensor(src, plan, source)
    t = t.float()
    if key in plan.loras:
        t = t + delta(plan.loras[key], acfg)
    return t


def delta(lo: _Lora, acfg: dict):
    """``B @ A * scale`` in float32, as peft's ``get_delta_weight`` computes it."""
    rank = lo.A.shape[0]
    d = (lo.B.float() @ lo.A.float()) * _scale(acfg, lo.module, rank)
    if lo.embedding or acfg.get("fan_in_fan_out"):
        d = d.T
    return d


# --- the merge ------------------------------------------------------------------------------

@dataclass
class Verification:
    ok: bool
    max_abs_diff: float
    tolerance: float
    top1_agree: float
    prompts: int
    dtype: str

    def line(self) -> str:
        verdict = "passed" if self.ok else "FAILED"
        return (f"verification {verdict}: max |logit difference| {self.max_abs_diff:.3g} "
                f"(tolerance {self.tolerance:.3g}, {self.dtype}) on {self.prompts} prompts; "
                f"top-1 tokens agree {self.top1_agree:.0%}")


@dataclass
class MergeResult:
    out: Path
    shards: int
    tensors: int
    bytes: int
    dtype: str
    streamed: bool
    fallback: str | None
    untied: bool
    seconds: float
    verification: Verification | None
    replaced_to: Path | None = None
    verify_note: str | None = None      # why verification did not run

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        d["replaced_to"] = str(self.replaced_to) if self.replaced_to else None
        return d


def _dtype_name(bcfg: dict, plan: Plan | None) -> str:
    name = str(bcfg.get("dtype") or bcfg.get("torch_dtype") or "").replace("torch.", "")
    if name in _FROM_TORCH:
        return _FROM_TORCH[name]
    if plan and plan.dtypes:
        first = next(iter(plan.dtypes.values()))
        return {"F16": "fp16", "BF16": "bf16"}.get(first, "fp32")
    return "fp32"


def _copy_side_files(src: Source, tmp: Path, untie: bool, dtype: str) -> None:
    bcfg = _read_json(src.base_dir / "config.json", "the base model folder is incomplete")
    bcfg.pop("quantization_config", None)
    key = "dtype" if "dtype" in bcfg or "torch_dtype" not in bcfg else "torch_dtype"
    bcfg[key] = _TORCH_DTYPE[dtype]
    if untie:
        bcfg["tie_word_embeddings"] = False
    atomic_write_json(tmp / "config.json", bcfg)
    if (src.base_dir / "generation_config.json").is_file():
        shutil.copy2(src.base_dir / "generation_config.json", tmp / "generation_config.json")
    for p in src.base_dir.glob("*.py"):   # remote code the config may point at
        shutil.copy2(p, tmp / p.name)
    copy_tokenizer(src.tokenizer_dir, tmp)


def copy_tokenizer(from_dir: Path, to_dir: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (from_dir / name).is_file():
            shutil.copy2(from_dir / name, to_dir / name)
            copied.append(name)
    return copied


def _shard_name(i: int, n: int) -> str:
    return "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"


_ST_SIZE = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
            "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_FLOAT = {"F64", "F32", "F16", "BF16"}


def _trim() -> None:
    """Hand freed tensor memory back to the OS between shards (glibc keeps it otherwise, and the
    peak would creep towards the model's size)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _return_big_frees() -> None:
    """Serve allocations of 1 MB and more with mmap from now on, so freeing one hands it back.

    glibc raises its mmap threshold after the first large free, and from then on serves large
    blocks from the heap, which it rarely shrinks: a forward pass that loads and frees each
    module's weights in turn would then keep them all, and the peak would grow to the model.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _reading(path: Path):
    """A damaged base shard is the user's problem to fix: say which file, in one line."""
    try:
        yield
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise TuituneError(f"{path}: cannot read ({type(exc).__name__}: {exc}); the base is damaged, "
                           "download it again") from None


@contextlib.contextmanager
def _writing(folder: Path):
    try:
        yield
    except OSError as exc:
        raise TuituneError(f"{folder}: cannot write ({exc.strerror or exc}); free some space or choose "
                           "another output folder; nothing was written") from None



class _ShardReader:
    """``safe_open`` on one shard, reopened after every ``window`` bytes read.

    Reading a tensor touches its pages of the memory-mapped file, and those pages count in the
    process's resident memory until the file is unmapped; reopening unmaps them, so reading a
    2 GB shard costs about ``window`` of resident memory, not 2 GB.
    """

    def __init__(self, path: Path, window: int = 256 << 20):
        self.path, self.window, self.f, self.read = path, window, None, 0

    def get(self, key: str):
        from safetensors import safe_open

        if self.f is not None and self.read >= self.window:
            self.close()
        if self.f is None:
            self.f = safe_open(str(self.path), framework="pt").__enter__()
            self.read = 0
        t = self.f.get_tensor(key)   # a copy: the mapping may go right after
        self.read += t.numel() * t.element_size()
        return t

    def close(self) -> None:
        if self.f is not None:
            self.f.__exit__(None, None, None)
            self.f = None
            _trim()


class _ShardWriter:
    """A safetensors file written one tensor at a time, in the order the header lists them.

    safetensors can only save a dict of tensors that are all in memory at once, which would
    hold a whole output shard; the format is simple (an 8-byte little-endian header length,
    the JSON header with each tensor's dtype, shape and byte offsets, then the raw bytes), so
    the header is written first from the plan and each tensor's bytes follow as it is merged,
    then freed. Tensors are laid out by element size, largest first (as safetensors itself
    does, so every tensor stays aligned); one that arrives before its turn waits in memory,
    which never happens when all of a shard's tensors have one dtype, as in every base model.
    """

    def __init__(self, path: Path, entries: list[tuple[str, str, list[int]]]):
        import struct

        entries = sorted(entries, key=lambda e: -_ST_SIZE.get(e[1], 4))   # stable: plan order otherwise
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for key, st, shape in entries:
            n = math.prod(shape) * _ST_SIZE.get(st, 4)
            header[key] = {"dtype": st, "shape": shape, "data_offsets": [offset, offset + n]}
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)   # the data starts 8-byte aligned
        self.path, self.size, self.order = path, offset, [e[0] for e in entries]
        self.expect = {k: header[k] for k in self.order}
        self.pending: dict[str, object] = {}
        self.next = 0
        self.fh = open(path, "wb")
        self.fh.write(struct.pack("<Q", len(raw)) + raw)

    def add(self, key: str, t) -> None:
        want = self.expect[key]
        if list(t.shape) != want["shape"]:
            raise RuntimeError(f"{key}: merged shape {list(t.shape)} is not the planned {want['shape']}")
        self.pending[key] = t
        while self.next < len(self.order) and self.order[self.next] in self.pending:
            k = self.order[self.next]
            self._write(k, self.pending.pop(k))
            self.next += 1

    def _write(self, key: str, t) -> None:
        import torch

        t = t.contiguous()
        # bytes of any dtype (bf16 has no numpy type): view the storage as uint8.
        data = t.view(torch.uint8) if t.element_size() == 1 else t.view(-1).view(torch.uint8)
        start, end = self.expect[key]["data_offsets"]
        if data.numel() != end - start:
            raise RuntimeError(f"{key}: {data.numel()} bytes, the header planned {end - start}")
        self.fh.write(data.numpy().tobytes() if data.numel() < (1 << 20) else memoryview(data.numpy()))

    def close(self) -> None:
        if self.fh is None:
            return
        if self.next != len(self.order):
            missing = [k for k in self.order[self.next:]][:3]
            self.fh.close()
            raise RuntimeError(f"{self.path.name}: tensors never written: {missing}")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        self.fh = None


def stream_merge(src: Source, plan: Plan, tmp: Path, dtype: str, max_shard: int,
                 on_progress: Progress | None = None, cancelled: Callable[[], bool] | None = None) -> tuple[int, int, int]:
    """Write the merged shards and index into ``tmp``; returns (shards, tensors, bytes).

    The hand-written part: no library streams a LoRA merge shard by shard.
    """
    import torch

    acfg = plan.acfg  # type: ignore[attr-defined]
    out_t = getattr(torch, _TORCH_DTYPE[dtype])
    out_size = _ST_SIZE[{"fp16": "F16", "bf16": "BF16", "fp32": "F32"}[dtype]]
    # Work out the output shards from the headers, so names and progress are known up front.
    order: list[tuple[str | None, str]] = [(s, k) for s in plan.shards for k in plan.keys_by_shard[s]]
    order += [(None, k) for k in plan.extra]
    nbytes = {}
    for shard, k in order:
        if shard is None:
            t = plan.extra[k]
            nbytes[k] = t.numel() * out_size
        else:
            n = math.prod(plan.shapes[k])
            st = plan.dtypes[k]
            nbytes[k] = n * (out_size if st in _FLOAT else _ST_SIZE.get(st, 4))
    groups: list[list[str]] = [[]]
    size = 0
    for _, k in order:
        if groups[-1] and size + nbytes[k] > max_shard:
            groups.append([])
            size = 0
        groups[-1].append(k)
        size += nbytes[k]
    n_out = len(groups)
    where = {k: i for i, g in enumerate(groups) for k in g}
    out_st = {"fp16": "F16", "bf16": "BF16", "fp32": "F32"}[dtype]

    def entry(k: str) -> tuple[str, list[int]]:
        if k in plan.extra:
            return out_st, list(plan.extra[k].shape)
        if k in plan.replace:
            return out_st, list(plan.replace[k].shape)
        st = plan.dtypes[k]
        return (out_st if st in _FLOAT else st), list(plan.shapes[k])

    total, done, written = len(order), 0, 0
    weight_map: dict[str, str] = {}
    writer: _ShardWriter | None = None
    current = -1

    def open_shard(i: int) -> None:
        nonlocal writer, current, written
        if writer is not None:
            writer.close()
            written += writer.size
        current = i
        name = _shard_name(i + 1, n_out)
        for k in groups[i]:
            weight_map[k] = name
        writer = _ShardWriter(tmp / name, [(k, *entry(k)) for k in groups[i]])

    def finish(k: str, t) -> None:
        nonlocal done
        if t.is_floating_point():
            t = t.to(out_t)
        while current < where[k]:
            open_shard(current + 1)
        writer.add(k, t)
        done += 1

    n_in = len(plan.shards) + (1 if plan.extra else 0)
    for i, shard in enumerate(plan.shards, 1):
        path = src.base_dir / shard
        reader = _ShardReader(path)
        try:
            for k in plan.keys_by_shard[shard]:
                if cancelled and cancelled():
                    raise TuituneError("merge cancelled; nothing was written")
                t = plan.replace.get(k)
                if t is None:
                    with _reading(path):
                        t = reader.get(k)
                if k in plan.loras:
                    t = delta(plan.loras[k], acfg).add_(t)   # in place: one float32 copy, not two
                bias_of = k[: -len(".bias")] + ".weight" if k.endswith(".bias") else None
                if bias_of in plan.loras and plan.loras[bias_of].B_bias is not None:
                    lo = plan.loras[bias_of]
                    t = t.float() + lo.B_bias.float() * _scale(acfg, lo.module, lo.A.shape[0])
                with _writing(tmp):
                    finish(k, t)
                if on_progress:
                    on_progress(done, total, i, n_in)
        finally:
            reader.close()
            _trim()
    for k, t in plan.extra.items():
        with _writing(tmp):
            finish(k, t)
        if on_progress:
            on_progress(done, total, n_in, n_in)
    with _writing(tmp):
        while current < n_out - 1:   # (a group can only be empty when the model has no tensors)
            open_shard(current + 1)
        writer.close()
        written += writer.size
    if n_out > 1:
        atomic_write_json(tmp / "model.safetensors.index.json",
                          {"metadata": {"total_size": written}, "weight_map": dict(sorted(weight_map.items()))})
    return n_out, total, written


def peft_merge(src: Source, tmp: Path, dtype: str, max_shard: int, on_progress: Progress | None = None) -> tuple[int, int, int]:
    """The fallback: the whole base in memory, peft's ``merge_and_unload``, ``save_pretrained``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    dt = getattr(torch, _TORCH_DTYPE[dtype])
    if on_progress:
        on_progress(0, 1, 0, 1)
    model = AutoModelForCausalLM.from_pretrained(src.base_dir, dtype=dt)
    model = PeftModel.from_pretrained(model, src.adapter_dir).merge_and_unload()
    model.save_pretrained(tmp, max_shard_size=max_shard)
    n = len(list(tmp.glob("*.safetensors")))
    size = sum(p.stat().st_size for p in tmp.glob("*.safetensors"))
    tensors = len(model.state_dict())
    del model
    if on_progress:
        on_progress(1, 1, 1, 1)
    return n, tensors, size


def _quiet_transformers() -> None:
    """No loading bars or deprecation chatter in a merge's output."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", module="peft")


def _keys_in(path: Path) -> dict[str, str]:
    """Tensor name -> ``path``, for every tensor of one safetensors file (reads the header only)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return dict.fromkeys(fh.keys(), str(path))


def _key_files(folder: Path) -> dict[str, str]:
    """Tensor name -> the safetensors file of ``folder`` that holds it (sharded or single file)."""
    shards, weight_map = _base_index(folder)
    if weight_map:
        return {k: str(folder / f) for k, f in weight_map.items()}
    return {k: f for shard in shards for k, f in _keys_in(folder / shard).items()}


def _stream_weights(model, locate: Callable[[str], tuple[str, str] | None]):
    """Leave ``model``'s weights on disk: each module reads its own just for its forward.

    ``model`` was built on the meta device (no memory); accelerate's offload hooks
    (``attach_align_device_hook`` with an ``OffloadedWeightsLoader`` over the safetensors
    files) load a module's tensors before its forward and drop them after, so a forward
    pass holds one module's weights at a time. ``locate(name)`` gives the file and key of
    a parameter; parameters already in memory (none, usually) are kept as they are.
    Raises KeyError for a weight that cannot be found.
    """
    from accelerate.hooks import attach_align_device_hook
    from accelerate.utils import OffloadedWeightsLoader

    in_memory, index, by_id = {}, {}, {}
    params = list(model.named_parameters(remove_duplicate=False))
    for name, p in params:
        if p.device.type != "meta":
            in_memory[name] = p.detach()
            continue
        where = locate(name)
        if where:
            index[name] = {"safetensors_file": where[0], "weight_name": where[1],
                           "dtype": str(p.dtype).removeprefix("torch.")}
            by_id.setdefault(id(p), index[name])
    for name, p in params:  # a tied weight's second name reads the first one's tensor
        if p.device.type == "meta" and name not in index:
            if id(p) not in by_id:
                raise KeyError(name)
            index[name] = by_id[id(p)]
    attach_align_device_hook(model, execution_device="cpu", offload=True,
                             weights_map=OffloadedWeightsLoader(state_dict=in_memory, index=index))
    return model


def _peft_locator(base_files: dict[str, str], adapter_files: dict[str, str]):
    """Where a parameter of ``PeftModel(base)`` lives: the adapter file, else the base's files."""
    def locate(name: str) -> tuple[str, str] | None:
        # peft's module names carry the adapter name ("lora_A.default.weight"); its file does not.
        for key in (name, name.replace(".modules_to_save.default.", "."), name.replace(".default.", ".")):
            if key in adapter_files:
                return adapter_files[key], key
        key = name[len(ADAPTER_PREFIX):] if name.startswith(ADAPTER_PREFIX) else name
        key = key.replace(".base_layer.", ".").replace(".original_module.", ".")
        return (base_files[key], key) if key in base_files else None
    return locate


def _empty_model(folder: Path, dt):
    """The model of ``folder``'s config.json, built on the meta device (no weights, no memory)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=dt)
    model.tie_weights()  # from_config on meta leaves tied embeddings as two tensors
    return model


def verify(src: Source, merged_dir: Path, dtype: str, prompts: list[str] | None = None) -> Verification:
    """Logits of the merged model vs base + adapter under peft, both streamed from disk.

    Neither model is loaded whole: both are built on the meta device and read their weights
    module by module during one forward pass (``_stream_weights``), so verification needs
    about one layer's memory and runs even where the model does not fit in RAM. A model
    that cannot be built or located that way is loaded whole instead.
    """
    import gc

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    # Both forwards run in float32 on the CPU, whatever the output dtype: bf16/fp16 weights are
    # exact in float32, a CPU runs float32 matmuls many times faster than bf16 ones, and the
    # difference left is the merge's own rounding to the output dtype, which the tolerance bounds.
    dt = torch.float32
    tok = AutoTokenizer.from_pretrained(src.tokenizer_dir)
    prompts = list(prompts or src.prompts or DEFAULT_PROMPTS)[:4]
    texts = []
    for p in prompts:
        msgs = [{"role": "user", "content": p}]
        texts.append(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
                     if getattr(tok, "chat_template", None) else p)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    tok.padding_side = "right"
    # One padded batch: each model runs one forward; only real (unpadded) positions are compared.
    batch = tok(texts, return_tensors="pt", add_special_tokens=False, padding=True, truncation=True, max_length=256)
    mask = batch["attention_mask"].bool()

    def logits(model):
        model.eval()
        with torch.no_grad():
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         use_cache=False).logits.float()[mask]

    def reference():
        try:
            base_files = _key_files(src.base_dir)
            adapter_files = _keys_in(src.adapter_dir / "adapter_model.safetensors")
            ref_model = PeftModel.from_pretrained(_empty_model(src.base_dir, dt), src.adapter_dir,
                                                  low_cpu_mem_usage=True)
            _stream_weights(ref_model, _peft_locator(base_files, adapter_files))
        except Exception:  # a layout the meta-device build or the locator does not know: load it whole
            ref_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(src.base_dir, dtype=dt),
                                                  src.adapter_dir)
        return logits(ref_model)

    def merged():
        try:
            files = _key_files(merged_dir)
            model = _stream_weights(_empty_model(merged_dir, dt), lambda n: (files[n], n) if n in files else None)
        except Exception:  # as above
            model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=dt)
        return logits(model)

    _return_big_frees()
    ref = reference()
    gc.collect()
    got = merged()
    gc.collect()
    diff = float((ref - got).abs().max())
    scale = max(1.0, float(ref.abs().max()))
    agree = float((ref.argmax(-1) == got.argmax(-1)).float().mean())
    tol = TOLERANCE[dtype] * scale
    return Verification(ok=bool(diff <= tol), max_abs_diff=diff, tolerance=tol,
                        top1_agree=agree, prompts=len(prompts), dtype=dtype)


def _import_in_background() -> None:
    """Start importing what verification needs (transformers, peft: ~8 s here) while the merge runs."""
    import threading

    def work():
        with contextlib.suppress(Exception):
            import accelerate.hooks  # noqa: F401
            import peft  # noqa: F401
            import transformers  # noqa: F401

    threading.Thread(target=work, name="tuitune-verify-imports", daemon=True).start()


def model_card(src: Source, result: MergeResult) -> str:
    lines = [
        "---", "library_name: transformers", f"base_model: {src.base_dir}", "tags: [tuitune, lora, merged]", "---",
        "", f"# {result.out.name}", "",
        "A standalone model: a LoRA adapter merged into its base by `tuitune merge`. It loads with",
        "`AutoModelForCausalLM.from_pretrained` and needs no peft.", "",
        f"- **base model**: `{src.base_dir}`",
        f"- **adapter**: `{src.adapter_dir}` ({src.label()})",
    ]
    if src.config_path:
        lines.append(f"- **run config**: `{src.config_path}`")
    if src.data_files:
        lines.append("- **data**: " + ", ".join(f"`{d}`" for d in src.data_files))
    if src.method == "qlora":
        lines.append("- **QLoRA**: the adapter was trained on the 4-bit base and merged into the 16-bit base weights")
    lines += [
        f"- **dtype**: {result.dtype}; {result.shards} shard(s), {result.tensors} tensors, {human_size(result.bytes)}",
        f"- **tokenizer**: from `{src.tokenizer_dir}`",
        "- **merge**: " + ("streamed shard by shard" if result.streamed
                           else f"peft merge_and_unload (fallback: {result.fallback})"),
    ]
    if result.untied:
        lines.append("- **embeddings**: untied (the adapter changed the input embeddings and the output head differently)")
    v = result.verification
    lines.append(f"- **{v.line()}**" if v else f"- **verification**: {result.verify_note or 'skipped'}")
    return "\n".join(lines) + "\n"


def merge(src: Source, out: str | Path, *, max_shard_size: str | int = "2GB", dtype: str | None = None,
          force: bool = False, verify_result: bool = True, on_progress: Progress | None = None,
          log: Callable[[str], None] | None = None, cancelled: Callable[[], bool] | None = None) -> MergeResult:
    """Merge ``src`` into a standalone model folder ``out``; see the module docstring."""
    log = log or (lambda s: None)
    out = Path(out).expanduser().absolute()
    if dtype is not None and dtype not in DTYPES:
        raise TuituneError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    max_shard = parse_size(max_shard_size)
    refuse_existing(out, force, folder=True)
    if out.resolve() in (src.base_dir.resolve(), src.adapter_dir.resolve()):
        raise TuituneError(f"{out}: is the base or adapter folder; choose a new output folder")
    t0 = time.monotonic()
    plan = make_plan(src, dtype)
    from tuitune.config.convert import keep_bitsandbytes_out

    keep_bitsandbytes_out()  # a merge quantizes nothing; peft would import bitsandbytes (and its noise)
    if verify_result:
        _import_in_background()
    bcfg = _read_json(src.base_dir / "config.json", "the base model folder is incomplete")
    dtype = dtype or _dtype_name(bcfg, plan)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(prefix=f"{out.name}.partial-", dir=out.parent)  # the umask's mode, not 0700
    try:
        if plan.fallback is None:
            log(f"streaming {len(plan.shards)} base shard(s) from {src.base_dir}")
            n, tensors, size = stream_merge(src, plan, tmp, dtype, max_shard, on_progress, cancelled)
            _copy_side_files(src, tmp, plan.untie, dtype)
        else:
            log(f"cannot stream this layout ({plan.fallback}); falling back to peft merge_and_unload, "
                "which loads the whole base into memory")
            n, tensors, size = peft_merge(src, tmp, dtype, max_shard, on_progress)
            copy_tokenizer(src.tokenizer_dir, tmp)
        result = MergeResult(out=out, shards=n, tensors=tensors, bytes=size, dtype=dtype,
                             streamed=plan.fallback is None, fallback=plan.fallback, untied=plan.untie,
                             seconds=0.0, verification=None)
        if not verify_result:
            result.verify_note = "skipped (--no-verify)"
            log(f"verification {result.verify_note}")
        else:
            log("verifying: logits of the merged model vs base + adapter (peft)")
            result.verification = verify(src, tmp, dtype)
            log(result.verification.line())
            if not result.verification.ok:
                raise TuituneError(f"{result.verification.line()}; the merged model differs from base + adapter, "
                                   "so it was not written (report this with the adapter_config.json)")
        result.seconds = time.monotonic() - t0
        atomic_write_text(tmp / "README.md", model_card(src, result))
        atomic_write_json(tmp / CARD_JSON, {"base": str(src.base_dir), "adapter": str(src.adapter_dir),
                                            "run": str(src.run_dir) if src.run_dir else None,
                                            "checkpoint": src.checkpoint, "config": str(src.config_path or "") or None,
                                            "data": src.data_files, **result.to_dict()})
        fix_modes(tmp)  # safetensors and copy2 leave 0600 shards; files get what open() gives
        result.replaced_to = publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def export_adapter(src: Source, out: str | Path, force: bool = False) -> Path:
    """A clean adapter folder (config, safetensors weights, tokenizer) ready to upload."""
    out = Path(out).expanduser().absolute()
    refuse_existing(out, force, folder=True)
    weights = src.adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise TuituneError(f"{src.adapter_dir}: no adapter_model.safetensors to export; save the adapter again")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(prefix=f"{out.name}.partial-", dir=out.parent)
    try:
        acfg = _read_json(src.adapter_dir / "adapter_config.json", "save the adapter again")
        acfg["inference_mode"] = True
        atomic_write_json(tmp / "adapter_config.json", acfg)
        shutil.copy2(weights, tmp / "adapter_model.safetensors")
        copy_tokenizer(src.tokenizer_dir, tmp)
        lines = ["---", "library_name: peft", f"base_model: {src.base_dir}", "---", "",
                 f"# {out.name}", "", f"A LoRA adapter exported by `tuitune merge --export-adapter` from {src.label()}.",
                 "", f"- **base model**: `{src.base_dir}`"]
        if src.config_path:
            lines.append(f"- **run config**: `{src.config_path}`")
        if src.data_files:
            lines.append("- **data**: " + ", ".join(f"`{d}`" for d in src.data_files))
        atomic_write_text(tmp / "README.md", "\n".join(lines) + "\n")
        fix_modes(tmp)
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --- what can be merged ----------------------------------------------------------------------

@dataclass
class SourceRow:
    """One adapter the Merge screen offers: a run's final adapter or one of its checkpoints."""

    run_id: str
    checkpoint: int | None
    status: str
    adapter: Path

    @property
    def key(self) -> str:
        return f"{self.run_id}::{'final' if self.checkpoint is None else self.checkpoint}"

    @property
    def what(self) -> str:
        return "final adapter" if self.checkpoint is None else f"checkpoint {self.checkpoint}"

    def default_output(self, workspace: Path) -> Path:
        tail = "merged" if self.checkpoint is None else f"step{self.checkpoint}-merged"
        return Path(workspace) / "models" / f"{self.run_id}-{tail}"


def list_sources(workspace: str | Path) -> list[SourceRow]:
    """The workspace's runs with an adapter (final first, then checkpoints newest first), newest runs first."""
    from tuitune.train.runfolder import list_runs

    rows: list[SourceRow] = []
    for run in list_runs(workspace):
        status = run.read_state().get("status", "unknown")
        if (run.adapter_dir / "adapter_config.json").is_file():
            rows.append(SourceRow(run.id, None, status, run.adapter_dir))
        for cp in reversed(run.list_checkpoints()):
            if (cp / "adapter_config.json").is_file():
                rows.append(SourceRow(run.id, int(cp.name.rsplit("-", 1)[-1]), status, cp))
    return rows
