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
it is made (``ShardWriter``: the header first, then the bytes, tensor by tensor). The
input is read through a 256 MB window of its memory map (``ShardReader``), so peak memory
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

The package: ``plan`` (read the adapter and the base's headers, check shapes, the delta
arithmetic), ``stream`` (the shard reader and writer, the streamed merge, peft's fallback),
``verify`` (logits against base + adapter, both streamed), ``publish`` (the whole merge,
the model card, adapter export, what can be merged). What to merge comes from
:func:`tuitune.sources.resolve` with ``need="adapter"``.
"""

from __future__ import annotations

from tuitune.merge.plan import (ADAPTER_PREFIX, CARD_JSON, DEFAULT_PROMPTS, DTYPES, TOKENIZER_FILES, TOLERANCE, Plan,
                                delta, make_plan)
from tuitune.merge.publish import (MergeResult, SourceRow, copy_tokenizer, export_adapter, list_sources, merge,
                                   model_card)
from tuitune.merge.shards import peft_merge, stream_merge
from tuitune.units import human_size, parse_size
from tuitune.merge.verify import Verification, verify

__all__ = ["ADAPTER_PREFIX", "CARD_JSON", "DEFAULT_PROMPTS", "DTYPES", "TOKENIZER_FILES", "TOLERANCE", "Plan", "delta",
           "human_size", "make_plan", "parse_size", "MergeResult", "SourceRow", "copy_tokenizer", "export_adapter",
           "list_sources", "merge", "model_card", "peft_merge", "stream_merge",
           "Verification", "verify"]
