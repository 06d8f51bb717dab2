"""``training.kernels``: how the loss (and, on a GPU, the layers) of an sft or pretrain run is computed.

* ``none``: the model's own forward and loss, with the head only at trained positions
  (:mod:`tuitune.train.trainer`): a (positions x vocabulary) float32 tensor of logits, kept for
  the backward, and its gradient beside it.
* ``auto``: on a CUDA GPU where ``liger_kernel`` imports and has kernels for the model type,
  Liger Kernel's fused linear cross-entropy and its RMSNorm, SwiGLU and RoPE kernels, through
  transformers' own switch (``TrainingArguments.use_liger_kernel``, which calls Liger's
  ``_apply_liger_kernel_to_instance``; Liger's patched forward takes our ``logits_to_keep`` and
  ``shift_labels``). Everywhere else, the chunked loss of :mod:`tuitune.train.chunked_loss`: the
  head and the cross-entropy a few hundred positions at a time, no (positions x vocabulary) tensor.
* ``liger``: Liger, or a config error where it cannot run (no CUDA, or the package missing).

This module stays light (no torch): the config checks and ``to_training_arguments`` read it.
"""

from __future__ import annotations

import importlib.util

KERNEL_TASKS = ("sft", "pretrain")  # the TuituneTrainer's tasks; TRL's trainers compute their own losses


def kernels_problem(kernels: str, cuda: bool) -> str | None:
    """Why ``kernels: liger`` cannot run on this machine (None when it can, or for another choice)."""
    if kernels != "liger":
        return None
    if not cuda:
        return ("liger runs Liger Kernel's Triton kernels, which need a CUDA GPU, and there is none here; "
                "set kernels: auto (the chunked loss on this machine) or none")
    if importlib.util.find_spec("liger_kernel") is None:
        return ("liger needs the liger-kernel package, which is not installed; pip install liger-kernel, "
                "or set kernels: auto")
    return None


def no_full_logits(cfg) -> bool:
    """Whether the run's loss never holds the (tokens x vocabulary) logits: an sft or pretrain run with
    kernels auto or liger (Liger's fused loss, else the chunked one). The VRAM estimate counts it so."""
    return cfg.task in KERNEL_TASKS and cfg.training.kernels != "none"


def use_liger(cfg, cuda: bool) -> bool:
    """Whether the run asks transformers for Liger (``TrainingArguments.use_liger_kernel``)."""
    if not no_full_logits(cfg):
        return False
    return cfg.training.kernels == "liger" or (cuda and importlib.util.find_spec("liger_kernel") is not None)


def liger_has(model) -> bool:
    """Whether Liger has kernels for ``model``'s type (transformers applies nothing to the others)."""
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError:
        return False
    return getattr(getattr(model, "config", None), "model_type", None) in MODEL_TYPE_TO_APPLY_LIGER_FN
