"""The merge plan: read the adapter and the base's headers, check every shape, decide per tensor."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tuitune.errors import FIELD, TuituneError
from tuitune.hardware import DTYPE_NAMES
from tuitune.sources import SHELL_BASE, ModelSource

DTYPES = ("fp16", "bf16", "fp32")
FROM_TORCH = {v: k for k, v in DTYPE_NAMES.items()}
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


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TuituneError(f"{path}: not found; {what}") from None
    except (OSError, ValueError) as exc:
        raise TuituneError(f"{path}: unreadable ({exc}); {what}") from None



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


def lora_scale(acfg: dict, module: str, rank: int) -> float:
    alpha = _pattern(acfg.get("alpha_pattern"), module, acfg.get("lora_alpha", 8))
    return alpha / math.sqrt(rank) if acfg.get("use_rslora") else alpha / rank


def base_index(base: Path) -> tuple[list[str], dict[str, str]]:
    """(shard files in order, key → shard) of a safetensors base, or ([], {}) if it has none."""
    idx = base / "model.safetensors.index.json"
    if idx.is_file():
        wm = read_json(idx, "the base's index is damaged; download the model again").get("weight_map", {})
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


def make_plan(src: ModelSource, out_dtype: str | None = None) -> Plan:
    """Read headers of the base and the whole adapter; check every shape; decide what to do."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    acfg = read_json(src.adapter / "adapter_config.json", "save the adapter again with save_pretrained")
    bcfg = read_json(src.base_dir / "config.json", "the base model folder is incomplete")
    if bcfg.get("quantization_config"):
        method = bcfg["quantization_config"].get("quant_method", "quantized")
        raise TuituneError(f"{src.base_dir}: the base is stored quantized ({method}); merge into the 16-bit "
                           "original instead: ", field="base", fix=f"pass {FIELD} with the unquantized model folder",
                           tui_fix=f"{SHELL_BASE}, DIR being the unquantized model folder")
    shards, weight_map = base_index(src.base_dir)
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
    weights = src.adapter / "adapter_model.safetensors"
    if not weights.is_file():
        if (src.adapter / "adapter_model.bin").is_file():
            plan.fallback = plan.fallback or "the adapter is saved as .bin, not safetensors"
            return plan
        raise TuituneError(f"{src.adapter}: no adapter_model.safetensors; save the adapter again with "
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
            f"in {src.base_dir}: the adapter was trained on another base; ", field="base",
            fix=f"pass {FIELD} with that model", tui_fix=f"{SHELL_BASE}, DIR being that model")

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


def _read_base_tensor(src: ModelSource, plan: Plan, key: str):
    from safetensors import safe_open

    for shard, keys in plan.keys_by_shard.items():
        if key in keys:
            with safe_open(str(src.base_dir / shard), framework="pt") as f:
                return f.get_tensor(key)
    raise KeyError(key)


def _final_tensor(src: ModelSource, plan: Plan, key: str, source: str, acfg: dict):
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
    d = (lo.B.float() @ lo.A.float()) * lora_scale(acfg, lo.module, rank)
    if lo.embedding or acfg.get("fan_in_fan_out"):
        d = d.T
    return d


