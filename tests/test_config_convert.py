"""Config -> library objects. Every schema field must reach one: none is silently ignored."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from tuitune.config import (
    METADATA_FIELDS,
    RunConfig,
    flatten,
    get_preset,
    to_bnb_config,
    to_data_settings,
    to_deepspeed_config,
    to_eval_settings,
    to_launch_command,
    to_lora_config,
    to_model_kwargs,
    to_training_arguments,
    unflatten,
)
from tuitune.config.fields import field_specs
from tuitune.notify import notify_settings

# A config where every section is in use: QLoRA, an eval file, ZeRO, two nodes of two GPUs.
EVERYTHING = {
    "model": "models/tiny-chat", "template": "chatml", "task": "sft", "method": "qlora",
    "trust_remote_code": False,
    "data": {"train": "data/train.jsonl", "eval": "data/eval.jsonl", "system": "be brief",
             "max_length": 512, "pack": True},
    "lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": "all-linear", "modules_to_save": ["lm_head"]},
    "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"},
    "training": {"epochs": 2, "max_steps": 50, "batch_size": 2, "grad_accum": 4, "lr": 2e-4,
                 "scheduler": "cosine", "warmup_ratio": 0.03, "weight_decay": 0.0, "max_grad_norm": 1.0,
                 "optimizer": "adamw_torch", "gradient_checkpointing": True, "precision": "fp32", "seed": 7,
                 "save_steps": 10, "save_total_limit": 2, "logging_steps": 5},
    "evaluation": {"every": 10, "prompts": ["hi"], "max_new_tokens": 32, "eval_loss": True},
    "distributed": {"gpus": 2, "nnodes": 2, "node_rank": 0, "master_addr": "10.0.0.1", "master_port": 29500,
                    "deepspeed": "zero2"},
}


def _other(spec, value):
    """A different valid value for a field."""
    if spec.kind == "bool":
        return not value
    if spec.kind == "choice":
        return next(c for c in spec.choices if c != value and c not in ("auto",))
    if spec.name == "training.report_to":
        return [*value, "tensorboard"]
    if spec.name == "grpo.rewards":
        return [*value, {"name": "regex", "pattern": "####"}]
    if spec.name == "notify.urls":
        return [*value, "ntfy://ntfy.sh/another-topic"]
    if spec.name == "notify.events":
        return [*value, "evaluation"]
    if spec.kind in ("list", "lines"):
        return ["q_proj", "v_proj"] if value == "all-linear" else [*value, "extra"]
    if spec.numeric:
        if isinstance(value, float) or spec.name in ("training.lr", "training.warmup_ratio", "lora.dropout",
                                                     "training.weight_decay", "training.max_grad_norm",
                                                     "training.epochs"):
            return value / 2 if value else 0.1
        return value + 1
    if value is None:
        return "data/other.jsonl" if spec.name.startswith("data.") else "x"
    return f"{value}-changed" if spec.name != "template" else "qwen_chat"


def _dict(obj):
    return None if obj is None else obj.to_dict()


def library_view(cfg: RunConfig) -> dict:
    """Every library object this config turns into, as comparable plain data."""
    from tuitune.train.nonfinite import NonFiniteGuard

    args = to_training_arguments(cfg, "/tmp/out", deepspeed=None)  # DeepSpeed needs GPUs; compared below
    kw = to_model_kwargs(cfg)
    return {
        "TrainingArguments": args.to_dict(),
        "LoraConfig": _dict(to_lora_config(cfg)),
        "BitsAndBytesConfig": _dict(to_bnb_config(cfg)),
        "deepspeed": to_deepspeed_config(cfg),
        "from_pretrained": {**kw, "dtype": str(kw["dtype"]),
                            "quantization_config": _dict(kw["quantization_config"])},
        "data": to_data_settings(cfg),
        "evaluation": to_eval_settings(cfg),
        "launch": to_launch_command(cfg, ["-m", "tuitune.train.worker"]),
        "DPOConfig": _preference_view(cfg),
        "GRPOConfig": _grpo_view(cfg),
        "notify": asdict(notify_settings(cfg)),  # the worker's sender, watchdog and environment
        "NonFiniteGuard": NonFiniteGuard(cfg).limit,  # the worker's stop on a NaN or inf loss
    }


def _grpo_view(cfg: RunConfig) -> dict:
    """What the grpo section sets in TRL's GRPOConfig, and the reward functions (by the names TRL logs)."""
    from tuitune.train.grpo import grpo_settings
    from tuitune.train.rewards import labels

    return {**grpo_settings(cfg), "rewards": labels(cfg.grpo.rewards),
            "options": [r.model_dump() for r in cfg.grpo.rewards]}


def _preference_view(cfg: RunConfig) -> dict:
    """TRL's DPOConfig for the same settings as a dpo run, and where its reference log-probs come from."""
    from tuitune.config.arguments import to_training_arguments as targs
    from tuitune.train.preference_trainer import preference_arguments, reference_mode

    dpo = cfg.model_copy(update={"task": "dpo"})
    a = preference_arguments(dpo, targs(dpo, "/tmp/out", deepspeed=None))
    return {"beta": a.beta, "loss_type": a.loss_type, "label_smoothing": a.label_smoothing,
            "precompute_ref_log_probs": a.precompute_ref_log_probs, "max_length": a.max_length,
            "reference": reference_mode(dpo)}


@pytest.fixture(scope="module")
def base():
    cfg = RunConfig.model_validate(EVERYTHING)
    return cfg, library_view(cfg)


@pytest.mark.parametrize("spec", [s for s in field_specs() if s.name not in METADATA_FIELDS],
                         ids=lambda s: s.name)
def test_every_field_reaches_a_library_object(spec, base):
    cfg0, view0 = base
    flat = flatten(cfg0.model_dump(mode="json"))
    flat[spec.name] = _other(spec, flat[spec.name])
    cfg = RunConfig.model_validate(unflatten(flat))
    view = library_view(cfg)
    changed = [k for k in view if view[k] != view0[k]]
    assert changed, f"{spec.name} changed to {flat[spec.name]!r} but no library object changed"


def test_metadata_fields_are_few_and_known():
    names = {s.name for s in field_specs()}
    assert set(METADATA_FIELDS) == {"preset"} and set(METADATA_FIELDS) <= names


def test_training_arguments_carry_the_values():
    cfg = RunConfig.model_validate(EVERYTHING)
    a = to_training_arguments(cfg, "/tmp/out", deepspeed=None)
    assert a.learning_rate == 2e-4 and a.per_device_train_batch_size == 2 and a.gradient_accumulation_steps == 4
    assert a.max_steps == 50 and a.warmup_steps == 0.03 and a.save_total_limit == 2 and a.seed == 7
    assert str(a.eval_strategy.value if hasattr(a.eval_strategy, "value") else a.eval_strategy) == "steps"
    assert a.eval_steps == 10 and a.report_to in ([], "none", ["none"]) or not a.report_to
    # no eval file: no eval loss
    cfg.data.eval = None
    b = to_training_arguments(cfg, "/tmp/out", deepspeed=None)
    assert str(getattr(b.eval_strategy, "value", b.eval_strategy)) == "no"


def test_full_method_has_no_adapter_and_lora_no_quantization():
    full = get_preset("full-small")
    assert to_lora_config(full) is None and to_bnb_config(full) is None
    tiny = get_preset("tiny-demo")
    lc = to_lora_config(tiny)
    assert (lc.r, lc.lora_alpha, lc.lora_dropout) == (16, 32, 0.0)
    assert lc.target_modules == "all-linear" and set(lc.modules_to_save) == {"embed_tokens", "lm_head"}
    assert to_bnb_config(tiny) is None


def test_deepspeed_json_per_stage():
    cfg = RunConfig.model_validate(EVERYTHING)
    assert to_deepspeed_config(get_preset("tiny-demo")) is None
    ds = to_deepspeed_config(cfg)
    assert ds["zero_optimization"]["stage"] == 2 and "offload_optimizer" not in ds["zero_optimization"]
    assert ds["train_micro_batch_size_per_gpu"] == 2 and ds["gradient_accumulation_steps"] == 4
    cfg.distributed.deepspeed = "zero3_offload"
    z = to_deepspeed_config(cfg)["zero_optimization"]
    assert z["stage"] == 3 and z["offload_param"]["device"] == "cpu" and z["offload_optimizer"]["device"] == "cpu"


def test_the_tiny_demo_objects_build_a_trainer(tiny_model, tmp_path):
    """The conversions are accepted by the real libraries on the real tiny model."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, Trainer

    cfg = get_preset("tiny-demo")
    kw = to_model_kwargs(cfg)
    kw["pretrained_model_name_or_path"] = str(tiny_model)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(**kw), to_lora_config(cfg))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("embed_tokens" in n for n in trainable)
    trainer = Trainer(model=model, args=to_training_arguments(cfg, tmp_path / "out"), train_dataset=[{}])
    assert trainer.args.max_steps == 100
