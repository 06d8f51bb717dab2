"""Presets for the tutorial's jobs: overrides on the schema's XTuner-style defaults."""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from typing import Any

from tuitune.config.schema import RunConfig, flatten
from tuitune.errors import TuituneError


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    overrides: dict = field(default_factory=dict)

    def config(self) -> RunConfig:
        return RunConfig.model_validate({"preset": self.name, **copy.deepcopy(self.overrides)})


#: XTuner's medical system prompt (SYSTEM_TEMPLATE.medical), as the MedQA tutorial uses it.
MEDICAL_SYSTEM = ("如果你是一名医生，请根据患者的描述回答医学问题。"
                  "If you are a doctor, please answer the medical questions based on the patient's description.")

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("assistant", "self-cognition assistant: QLoRA on internlm2-chat-1.8b (the tutorial's 'personal assistant')", {
        "model": "internlm/internlm2-chat-1_8b",
        "template": "internlm2_chat",
        "trust_remote_code": True,
        "method": "qlora",
        "data": {"train": "data/self_cognition.jsonl", "max_length": 2048, "pack": True},
        "training": {"epochs": 3, "batch_size": 1, "grad_accum": 16, "save_steps": 300, "logging_steps": 10},
        "evaluation": {"every": 300, "prompts": ["请介绍一下你自己", "Please introduce yourself"],
                       "max_new_tokens": 128},
    }),
    Preset("medqa", "medical QA: QLoRA with XTuner's medical system prompt, eval loss on a held-out split", {
        "model": "internlm/internlm2-chat-1_8b",
        "template": "internlm2_chat",
        "trust_remote_code": True,
        "method": "qlora",
        "data": {"train": "data/medqa_train.jsonl", "eval": "data/medqa_test.jsonl", "system": MEDICAL_SYSTEM,
                 "max_length": 2048, "pack": True},
        "training": {"epochs": 3, "batch_size": 1, "grad_accum": 16, "save_steps": 500},
        "evaluation": {"every": 500, "prompts": ["我有高血压，能吃布洛芬吗？",
                                                 "What are the side effects of metformin?"],
                       "max_new_tokens": 256},
    }),
    Preset("pretrain", "incremental pretraining on plain text: QLoRA on internlm2-1.8b (base model)", {
        "model": "internlm/internlm2-1_8b",
        "trust_remote_code": True,
        "task": "pretrain",
        "method": "qlora",
        "data": {"train": "data/pretrain.jsonl", "max_length": 2048, "pack": True},
        "training": {"epochs": 1, "batch_size": 1, "grad_accum": 16, "save_steps": 500},
        "evaluation": {"every": 500, "prompts": ["书生·浦语大模型实战营是", "上海是"], "max_new_tokens": 64},
    }),
    Preset("full-small", "full fine-tune of a small model (Qwen2.5-0.5B-Instruct), ZeRO-2 when on several GPUs", {
        "model": "Qwen/Qwen2.5-0.5B-Instruct",
        "method": "full",
        "data": {"train": "data/train.jsonl", "max_length": 2048, "pack": True},
        "training": {"epochs": 3, "batch_size": 4, "grad_accum": 4, "lr": 2e-5, "weight_decay": 0.01,
                     "save_steps": 500},
        "evaluation": {"every": 500, "prompts": ["请介绍一下你自己"]},
    }),
    Preset("dpo", "preference tuning (DPO) with QLoRA on internlm2-chat-1.8b: the base with the adapter off is "
           "the reference, so no second copy", {
        "model": "internlm/internlm2-chat-1_8b",
        "template": "internlm2_chat",
        "trust_remote_code": True,
        "task": "dpo",
        "method": "qlora",
        "data": {"train": "data/preference_train.jsonl", "eval": "data/preference_test.jsonl",
                 "max_length": 1024, "pack": False},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "training": {"epochs": 1, "batch_size": 1, "grad_accum": 16, "lr": 5e-5, "warmup_ratio": 0.1,
                     "save_steps": 200},
        "preference": {"beta": 0.1, "loss_type": "sigmoid"},
        "evaluation": {"every": 200, "prompts": ["请介绍一下你自己", "Please introduce yourself"]},
    }),
    Preset("orpo", "preference tuning without a reference model (ORPO: SFT and odds ratio in one loss), QLoRA "
           "on internlm2-chat-1.8b", {
        "model": "internlm/internlm2-chat-1_8b",
        "template": "internlm2_chat",
        "trust_remote_code": True,
        "task": "orpo",
        "method": "qlora",
        "data": {"train": "data/preference_train.jsonl", "eval": "data/preference_test.jsonl",
                 "max_length": 1024, "pack": False},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "training": {"epochs": 1, "batch_size": 1, "grad_accum": 16, "lr": 5e-5, "warmup_ratio": 0.1,
                     "save_steps": 200},
        "preference": {"beta": 0.1},
        "evaluation": {"every": 200, "prompts": ["请介绍一下你自己", "Please introduce yourself"]},
    }),
    Preset("grpo", "reinforcement learning from checkable rewards (GRPO) with QLoRA on Qwen2.5-1.5B-Instruct, on "
           "GSM8K-style prompts: a correct final answer and the #### format are rewarded (a GPU box)", {
        "model": "Qwen/Qwen2.5-1.5B-Instruct",
        "task": "grpo",
        "method": "qlora",
        "data": {"train": "data/gsm8k_train.jsonl", "max_length": 512, "pack": False},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "training": {"epochs": 1, "max_steps": 500, "batch_size": 8, "grad_accum": 4, "lr": 1e-5,
                     "warmup_ratio": 0.05, "save_steps": 50, "logging_steps": 1},
        "grpo": {"num_generations": 8, "max_completion_length": 256, "temperature": 0.9, "beta": 0.04,
                 "rewards": [{"name": "exact", "weight": 1.0},
                             {"name": "regex", "weight": 0.5, "pattern": r"####\s*-?[\d,.]+\s*$"}]},
        "evaluation": {"every": 50, "prompts": ["Natalia sold 48 clips in April and half as many in May. How many "
                                                "clips did she sell altogether? End with #### and the number."],
                       "max_new_tokens": 256, "eval_loss": False},
    }),
    Preset("tiny-demo", "the tiny offline model on the sample self-cognition data: learns the name in ~1 min on a CPU", {
        "model": "models/tiny-chat",
        "method": "lora",
        "data": {"train": "data/self_cognition.jsonl", "max_length": 256, "pack": False},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear",
                 "modules_to_save": ["embed_tokens", "lm_head"]},
        "training": {"max_steps": 100, "batch_size": 16, "grad_accum": 1, "lr": 5e-3, "warmup_ratio": 0.03,
                     "gradient_checkpointing": False, "precision": "fp32", "save_steps": 20,
                     "save_total_limit": 5, "logging_steps": 5},
        "evaluation": {"every": 20, "prompts": ["请介绍一下你自己", "你是谁"], "max_new_tokens": 48,
                       "eval_loss": False},
    }),
    Preset("smol-demo", "a real model (SmolLM2-135M-Instruct, `tuitune demo --real`) learns a name by LoRA "
           "in a few minutes on a CPU", {
        "model": "models/smollm2-135m-instruct",
        "method": "lora",
        "data": {"train": "data/self_cognition_en.jsonl", "max_length": 128, "pack": True},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "training": {"max_steps": 40, "batch_size": 4, "grad_accum": 1, "lr": 5e-4, "warmup_ratio": 0.05,
                     "gradient_checkpointing": False, "save_steps": 20, "save_total_limit": 2,
                     "logging_steps": 5},
        "evaluation": {"every": 20, "prompts": ["Who are you?", "What is the capital of France?"],
                       "max_new_tokens": 32, "eval_loss": False},
    }),
]}

#: smol-grpo: the real demo model learns to end its answers with ``#### <number>`` (a format reward) while a
#: correctness reward keeps the arithmetic (a format reward alone is learned by dropping the arithmetic).
#: CPU-sane generation: 4 prompts × 4 completions of at most 48 tokens a step, ~20 s on 2 cores.
PRESETS["smol-grpo"] = Preset(
    "smol-grpo", "GRPO on a CPU: the real demo model (SmolLM2-135M-Instruct, `tuitune demo --real`) learns to "
    "end its answers with #### <number>, rewarded for the format and the right sum", {
        "model": "models/smollm2-135m-instruct",
        "task": "grpo",
        "method": "lora",
        "data": {"train": "data/arithmetic_prompts.jsonl", "max_length": 256, "pack": False},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "training": {"max_steps": 10, "batch_size": 16, "grad_accum": 1, "lr": 1e-4, "warmup_ratio": 0.0,
                     "gradient_checkpointing": False, "save_steps": 5, "save_total_limit": 2, "logging_steps": 1},
        "grpo": {"num_generations": 4, "max_completion_length": 48, "temperature": 0.7, "beta": 0.0,
                 "rewards": [{"name": "regex", "weight": 1.0, "pattern": r"####\s*-?\d+\s*$"},
                             {"name": "exact", "weight": 1.0}]},
        "evaluation": {"every": 5, "prompts": ["What is 38 + 45? End your answer with a line: #### <number>"],
                       "max_new_tokens": 48, "eval_loss": False},
    })


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> RunConfig:
    """A fresh RunConfig for preset ``name``; TuituneError with a suggestion for an unknown name."""
    try:
        return PRESETS[name].config()
    except KeyError:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise TuituneError(f"unknown preset {name!r}; {hint}presets: {', '.join(PRESETS)} "
                           "(`tuitune config list`)") from None


def diff_against(cfg: RunConfig, base: RunConfig | None = None) -> list[tuple[str, Any, Any]]:
    """(field, base value, value) for each field that differs from ``base`` (default: its preset).

    Without a preset the base is the schema's defaults for the same model.
    """
    if base is None:
        if cfg.preset and cfg.preset in PRESETS:
            base = get_preset(cfg.preset)
        else:
            base = RunConfig(model=cfg.model, preset=cfg.preset)
    a = flatten(base.model_dump(mode="json"))
    b = flatten(cfg.model_dump(mode="json"))
    return [(k, a.get(k), b.get(k)) for k in b if k != "preset" and a.get(k) != b.get(k)]
