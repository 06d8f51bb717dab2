"""Config -> what the libraries take. transformers / peft / torch are imported inside.

Every schema field ends up in one of these (a test walks them all):
``to_training_arguments`` (TrainingArguments), ``to_lora_config`` (peft LoraConfig),
``to_bnb_config`` (BitsAndBytesConfig), ``to_deepspeed_config`` (DeepSpeed JSON),
``to_model_kwargs`` (``from_pretrained``), ``to_data_settings`` (the encoder),
``to_eval_settings`` (the evaluation callback), ``to_launch_command`` (torchrun).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tuitune import hardware
from tuitune.config.schema import RunConfig
from tuitune.hardware import (DTYPE_NAMES, Hardware, bnb_config, resolve_compute_dtype, resolve_precision, torch_dtype,
                              uses_autocast)

#: Fields that are not settings of any library: the config's own bookkeeping.
METADATA_FIELDS = ("preset",)


def to_training_arguments(cfg: RunConfig, output_dir, **overrides):
    """``transformers.TrainingArguments`` for this run; ``overrides`` win (e.g. ``report_to``).

    ``output_dir`` is the run's ``checkpoints/``; its parent is the run folder, whose ``tracking/``
    holds what ``training.report_to``'s trackers write (the worker points them there, see
    ``tuitune.train.tracking``), named after the run.
    """
    from transformers import TrainingArguments

    from tuitune.train.kernels import use_liger

    t, ev = cfg.training, cfg.evaluation
    precision = resolve_precision(cfg)
    cuda = hardware.probe_hardware().cuda  # through the module: tests set the probe there
    autocast = uses_autocast(cfg)
    do_eval = bool(cfg.data.eval) and ev.eval_loss
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=float(t.epochs),
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        lr_scheduler_type=t.scheduler,
        # transformers 5 dropped warmup_ratio: a float below 1 in warmup_steps is the ratio.
        warmup_steps=float(t.warmup_ratio),
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optimizer,
        bf16=autocast and precision == "bf16",
        fp16=autocast and precision == "fp16",
        use_cpu=not cuda,
        # training.kernels: transformers applies Liger's kernels to the model (tuitune.train.kernels).
        use_liger_kernel=use_liger(cfg, cuda),
        seed=t.seed,
        data_seed=t.seed,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        logging_strategy="steps",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if do_eval else "no",
        eval_steps=ev.every if do_eval else None,
        do_eval=do_eval,
        # The held-out loss is all the evaluation keeps; without this the Trainer gathers every
        # batch's logits (batch x length x vocabulary floats) for metrics nobody computes.
        prediction_loss_only=True,
        report_to=list(t.report_to) or "none",
        run_name=Path(output_dir).parent.name if t.report_to else None,
        # The run's progress is in events.jsonl; a tqdm bar is for a person watching a terminal, and
        # in train.log (or a pipe) it is only carriage-return noise.
        disable_tqdm=not sys.stderr.isatty(),
        remove_unused_columns=False,
        deepspeed=to_deepspeed_config(cfg),
        ddp_find_unused_parameters=False if cfg.distributed.gpus * cfg.distributed.nnodes > 1 else None,
    )
    # transformers 5.x renamed gradient_checkpointing to activation_checkpointing.
    ckpt = "activation_checkpointing" if "activation_checkpointing" in _init_params(TrainingArguments) \
        else "gradient_checkpointing"
    kwargs[ckpt] = t.gradient_checkpointing
    kwargs[f"{ckpt}_kwargs"] = {"use_reentrant": False} if t.gradient_checkpointing else None
    if "logging_dir" in _init_params(TrainingArguments):
        # transformers 4.x: TensorBoard writes to logging_dir (5.x reads TENSORBOARD_LOGGING_DIR,
        # which the worker sets to the same folder).
        from tuitune.train.tracking import TRACKERS

        kwargs["logging_dir"] = str(TRACKERS["tensorboard"].folder_in(Path(output_dir).parent))
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def _init_params(cls) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)


def to_lora_config(cfg: RunConfig):
    """``peft.LoraConfig``, or None for ``method: full``."""
    if not cfg.uses_adapter:
        return None
    from peft import LoraConfig, TaskType

    lo = cfg.lora
    extra = {}
    if lo.modules_to_save and "ensure_weight_tying" in _init_params(LoraConfig):
        # embed_tokens and lm_head trained in full on a model with tied embeddings stay one
        # matrix (peft >= 0.18); without it the adapter saves two diverging copies.
        extra["ensure_weight_tying"] = True
    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        target_modules=lo.target_modules if lo.target_modules == "all-linear" else list(lo.target_modules),
        modules_to_save=list(lo.modules_to_save) or None,
        bias="none",
        **extra,
    )


def to_bnb_config(cfg: RunConfig):
    """``transformers.BitsAndBytesConfig`` for ``method: qlora``, else None."""
    if cfg.method != "qlora":
        return None
    q = cfg.quantization
    return bnb_config(q.bits, resolve_compute_dtype(cfg), quant_type=q.quant_type, double_quant=q.double_quant)


def to_deepspeed_config(cfg: RunConfig) -> dict | None:
    """The DeepSpeed JSON for ``distributed.deepspeed`` (None for ``none``).

    Batch sizes and clipping are written from the config; the precision flags stay
    ``auto`` so the HF integration fills them from TrainingArguments, and there is no
    optimizer/scheduler block, so ``training.optimizer`` and ``training.scheduler`` apply.
    """
    stage = cfg.distributed.deepspeed
    if stage == "none":
        return None
    t = cfg.training
    zero: dict[str, Any] = {
        "stage": 3 if stage.startswith("zero3") else 2,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if zero["stage"] == 2:
        zero.update({"allgather_partitions": True, "allgather_bucket_size": 2e8, "reduce_scatter": True})
    else:
        zero.update({"sub_group_size": 1e9, "stage3_prefetch_bucket_size": "auto",
                     "stage3_param_persistence_threshold": "auto",
                     "stage3_max_live_parameters": 1e9, "stage3_max_reuse_distance": 1e9,
                     "stage3_gather_16bit_weights_on_model_save": True})
    if stage.endswith("_offload"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if zero["stage"] == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": t.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "train_batch_size": "auto",
        "gradient_clipping": t.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto", "loss_scale": 0, "initial_scale_power": 16},
        "steps_per_print": t.logging_steps,
        "wall_clock_breakdown": False,
    }
    if stage.endswith("_offload"):
        # No "optimizer" block: the Trainer builds training.optimizer with training.scheduler
        # (as XTuner's ZeRO JSONs leave it to the runner); allow it with CPU offload.
        ds["zero_force_ds_cpu_optimizer"] = False
    return ds


def model_dtype(cfg: RunConfig, hw: Hardware | None = None) -> str:
    """The dtype the base model is loaded in: "bfloat16", "float16" or "float32".

    LoRA: the resolved precision, so the frozen base is held (and multiplied) in 16 bits where
    that pays; its trainable weights are upcast to fp32 after wrapping (``build.load_model``).
    Full fine-tuning: fp32 always, the optimizer's master weights; autocast gives the 16-bit
    compute. QLoRA: the compute dtype (for the layers that stay unquantized).
    """
    if cfg.method == "qlora":
        return resolve_compute_dtype(cfg, hw)
    if cfg.method == "full":
        return "float32"
    return DTYPE_NAMES[resolve_precision(cfg, hw)]


def to_model_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """Keyword arguments for ``AutoModelForCausalLM.from_pretrained`` (and the tokenizer's)."""
    return {
        "pretrained_model_name_or_path": cfg.model_path(),
        "trust_remote_code": cfg.trust_remote_code,
        "dtype": torch_dtype(model_dtype(cfg)),
        "quantization_config": to_bnb_config(cfg),
    }


def to_data_settings(cfg: RunConfig) -> dict[str, Any]:
    """What the encoder needs: files (absolute), template, system prompt, length, packing, task."""
    d = cfg.data
    return {
        "train": [{"path": str(cfg.resolve(s.path)), "weight": s.weight, "max_records": s.max_records}
                  for s in d.sources()],
        "eval": str(cfg.resolve(d.eval)) if d.eval else None,
        "template": cfg.template,
        "system": d.system,
        "max_length": d.max_length,
        "pack": d.pack,
        "task": cfg.task,
    }


def to_eval_settings(cfg: RunConfig) -> dict[str, Any]:
    """What the evaluation callback needs: when, which prompts, how long the answers."""
    ev = cfg.evaluation
    return {"every": ev.every, "prompts": list(ev.prompts), "max_new_tokens": ev.max_new_tokens,
            "eval_loss": ev.eval_loss, "system": cfg.data.system, "template": cfg.template}


def to_launch_command(cfg: RunConfig, argv: list[str]) -> list[str]:
    """The command that starts the worker ``argv`` (a Python module and its args): plain
    Python on one device, torchrun across several GPUs or nodes."""
    d = cfg.distributed
    from tuitune.fsutil import python_cmd

    if d.gpus * d.nnodes == 1:
        return [*python_cmd(), *argv]
    return [*python_cmd(), "-m", "torch.distributed.run",
            f"--nproc_per_node={d.gpus}", f"--nnodes={d.nnodes}", f"--node_rank={d.node_rank}",
            f"--master_addr={d.master_addr}", f"--master_port={d.master_port}", *argv]
