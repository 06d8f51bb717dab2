"""Verification: the merged model's logits against base + adapter under peft, both streamed from disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tuitune.merge.plan import ADAPTER_PREFIX, DEFAULT_PROMPTS, TOLERANCE, base_index
from tuitune.merge.shards import quiet_transformers, return_big_frees, imports_ready
from tuitune.sources import ModelSource


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



def _keys_in(path: Path) -> dict[str, str]:
    """Tensor name -> ``path``, for every tensor of one safetensors file (reads the header only)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        return dict.fromkeys(fh.keys(), str(path))


def _key_files(folder: Path) -> dict[str, str]:
    """Tensor name -> the safetensors file of ``folder`` that holds it (sharded or single file)."""
    shards, weight_map = base_index(folder)
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


def verify(src: ModelSource, merged_dir: Path, dtype: str, prompts: list[str] | None = None) -> Verification:
    """Logits of the merged model vs base + adapter under peft, both streamed from disk.

    Neither model is loaded whole: both are built on the meta device and read their weights
    module by module during one forward pass (``_stream_weights``), so verification needs
    about one layer's memory and runs even where the model does not fit in RAM. A model
    that cannot be built or located that way is loaded whole instead.
    """
    import gc

    imports_ready()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
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
            adapter_files = _keys_in(src.adapter / "adapter_model.safetensors")
            ref_model = PeftModel.from_pretrained(_empty_model(src.base_dir, dt), src.adapter,
                                                  low_cpu_mem_usage=True)
            _stream_weights(ref_model, _peft_locator(base_files, adapter_files))
        except Exception:  # a layout the meta-device build or the locator does not know: load it whole
            ref_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(src.base_dir, dtype=dt),
                                                  src.adapter)
        return logits(ref_model)

    def merged():
        try:
            files = _key_files(merged_dir)
            model = _stream_weights(_empty_model(merged_dir, dt), lambda n: (files[n], n) if n in files else None)
        except Exception:  # as above
            model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=dt)
        return logits(model)

    return_big_frees()
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


