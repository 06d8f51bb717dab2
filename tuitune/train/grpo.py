"""GRPO (task ``grpo``) on TRL's ``GRPOTrainer``, in the same run folder as every task.

TRL does the learning: it samples ``grpo.num_generations`` completions of each prompt, scores them
with the run's rewards (:mod:`tuitune.train.rewards`), and moves the policy towards the completions
that scored above their group's mean. What is ours:

* the prompt is rendered and tokenized with the run's template by the path chat uses
  (:func:`tuitune.templates.encode_prompt`), so the model is trained on the prompts it will be asked
  in chat; TRL would tokenize the text again (adding a BOS where our template has one already), so
  the trainer takes our ids for each rendered prompt;
* a completion ends at the template's end-of-turn token as well as at EOS (the model's
  ``generation_config`` gets both), so the end-of-turn is part of what is learned, as in SFT;
* the reference of the KL term (``grpo.beta`` > 0) is the base with the adapter off, as for DPO:
  TRL's copy of the adapter ("ref") is dropped; a full fine-tune's reference is a copy TRL loads;
* sampled completions with each reward's score are ``sample`` events (``when: "completions"``), at
  the first log, every ``evaluation.every`` steps and at the last step, shown as SFT's sample answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuitune.errors import TuituneError


def build_prompt_dataset(cfg, tokenizer, path: Path, *, log=print, questions: dict[str, str] | None = None):
    """The prompt records of ``path`` as TRL's dataset: ``prompt`` (the rendered text), ``answer``
    (the reference, "" for none) and ``record`` (file and line, for a reward's error), and the map
    from each rendered prompt to its token ids. ``questions``, if given, gets each rendered prompt's
    record prompt (what the sampled completions are shown under)."""
    from datasets import Dataset

    from tuitune.data.prompts import load_prompts, messages_of
    from tuitune.templates import encode_prompt, render_prompt

    path = Path(path)
    if not path.is_file():
        raise TuituneError(f"data: {path} does not exist; write prompt records {{\"prompt\", \"answer\"}} and "
                           "point data.train at the file")
    rows: dict[str, list] = {"prompt": [], "answer": [], "record": []}
    ids_of: dict[str, list[int]] = {}
    too_long = 0
    for where, rec in load_prompts(path):
        messages = messages_of(rec, cfg.data.system)
        text = render_prompt(tokenizer, cfg.template, messages)
        ids = encode_prompt(tokenizer, cfg.template, messages)
        if len(ids) >= cfg.data.max_length:
            too_long += 1
            continue
        ids_of[text] = ids
        if questions is not None:
            questions[text] = str(rec["prompt"])
        rows["prompt"].append(text)
        rows["answer"].append(str(rec.get("answer") or ""))
        rows["record"].append(f"{path.name} {where}")
    if not rows["prompt"]:
        raise TuituneError(f"data: every prompt of {path} has data.max_length {cfg.data.max_length} tokens or more; "
                           "raise data.max_length")
    if too_long:
        log(f"{too_long} prompts of {path.name} fill data.max_length {cfg.data.max_length}; skipped")
    return Dataset.from_dict(rows), ids_of


def grpo_settings(cfg) -> dict[str, Any]:
    """What the ``grpo:`` section sets in TRL's GRPOConfig (the rest comes from the run's TrainingArguments)."""
    g = cfg.grpo
    settings = dict(num_generations=g.num_generations, max_completion_length=g.max_completion_length,
                    temperature=g.temperature, beta=g.beta, loss_type=g.loss_type, epsilon=g.epsilon,
                    use_vllm=g.use_vllm, reward_weights=[float(r.weight) for r in g.rewards])
    if g.use_vllm:
        settings["vllm_mode"] = "colocate"   # vLLM inside the training process: no server to start
    return settings


def grpo_arguments(cfg, base_args):
    """TRL's GRPOConfig holding every value of the run's ``TrainingArguments`` and the grpo section.

    GRPOConfig's own defaults for what the TrainingArguments set (bf16 on, learning rate 1e-6,
    gradient checkpointing on, logging every 10 steps) would override the run's config on a CPU
    box: they are all taken from the run's arguments instead.
    """
    from dataclasses import fields

    from transformers import TrainingArguments
    from trl import GRPOConfig

    kwargs = {f.name: getattr(base_args, f.name) for f in fields(TrainingArguments) if f.init}
    kwargs.update(grpo_settings(cfg))
    # TRL counts the prompt and completion tokens itself; the Trainer's count looks for input_ids.
    kwargs.update(include_num_input_tokens_seen="no", log_completions=False)
    return GRPOConfig(**kwargs)


def _end_of_turn_ids(cfg, model, tokenizer) -> list[int]:
    """EOS and the template's end-of-turn token(s): where a completion ends."""
    from tuitune.generation import stop_tokens
    from tuitune.templates import stop_words

    ids, _text_words = stop_tokens(model, tokenizer, stop_words(tokenizer, cfg.template))
    return ids


#: Sampled completions in one ``sample`` event: whole groups (one prompt's completions), this many at most
#: unless one group is larger.
SAMPLED_COMPLETIONS = 8


def scored_completions(logs: dict, names: list[str], weights: list[float], n: int,
                       questions: dict[str, str]) -> list[dict]:
    """The newest ``n`` completions in TRL's ``_logs`` (prompt, completion, each reward's score) as a sample
    event's answers: the prompt as the record wrote it, the completion, the weighted reward and each score
    (None where a function skipped it)."""
    import math

    prompts, completions = list(logs["prompt"])[-n:], list(logs["completion"])[-n:]
    scores = {name: list(logs["rewards"][name])[-n:] for name in names}
    out = []
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        if not isinstance(completion, str):  # a conversation: the assistant's message
            completion = (completion[-1] or {}).get("content", "") if completion else ""
        mine = {name: None if math.isnan(v[i]) else round(v[i], 4) for name, v in scores.items()}
        scored = [w * mine[name] for name, w in zip(names, weights) if mine[name] is not None]
        out.append({"prompt": questions.get(prompt, prompt) if isinstance(prompt, str) else str(prompt),
                    "answer": str(completion), "reward": round(sum(scored), 4) if scored else None,
                    "rewards": mine})
    return out


def make_grpo_trainer(cfg, *, model, args, train_dataset, eval_dataset, tokenizer, callbacks,
                      prompt_ids: dict[str, list[int]], questions: dict[str, str] | None = None) -> Any:
    """TRL's GRPOTrainer on the run's prompts (their ids ours), rewards and model."""
    from trl import GRPOTrainer

    from tuitune.train.callbacks import RunCallback
    from tuitune.train.preference_trainer import drop_reference_adapter
    from tuitune.train.rewards import reward_functions

    funcs, _weights = reward_functions(cfg.grpo.rewards, cfg.workspace)  # weights: in args.reward_weights

    class TuituneGRPOTrainer(GRPOTrainer):
        def _tokenize_prompts(self, prompts: list):
            # Our template's ids for each rendered prompt (TRL would tokenize the text again).
            if isinstance(prompts[0], str) and all(p in prompt_ids for p in prompts):
                return [list(prompt_ids[p]) for p in prompts], None, {}
            return super()._tokenize_prompts(prompts)

        _scored: list[dict] = []   # the newest training batch's completions, scored
        _next_sample = 0           # the step from which the next training log writes them

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            if self.model.training and self.accelerator.is_main_process:
                n = len(inputs) * self.accelerator.num_processes  # TRL gathered every process's into _logs
                group = self.num_generations
                keep = min(n, max(group, SAMPLED_COMPLETIONS // group * group))
                self._scored = scored_completions(self._logs, list(self.reward_func_names),
                                                  self.reward_weights.tolist(), n, questions or {})[:keep]
            return out

        def log(self, logs: dict, start_time=None) -> None:
            training = self.model.training
            super().log(logs, start_time)
            step, every = self.state.global_step, cfg.evaluation.every
            if not (training and self._scored and (step >= self._next_sample or step >= self.state.max_steps)):
                return
            self._next_sample = (step // every + 1) * every
            for cb in self.callback_handler.callbacks:
                if isinstance(cb, RunCallback):  # writes on the main process only
                    cb.event(type="sample", step=step, when="completions", answers=self._scored)
            self._scored = []

    eos = _end_of_turn_ids(cfg, model, tokenizer)
    model.generation_config.eos_token_id = eos if len(eos) > 1 else eos[0]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    trainer = TuituneGRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=train_dataset,
                                 eval_dataset=eval_dataset, processing_class=tokenizer, callbacks=list(callbacks))
    drop_reference_adapter(trainer)
    return trainer


def build_grpo(cfg, model, base_args, tokenizer, callbacks, *, log=print):
    """The GRPO trainer of a run: its prompts (and held-out prompts when data.eval is set), arguments, rewards."""
    if len(cfg.data.sources()) > 1:
        raise TuituneError("data.train: task grpo takes one file of prompts; join the files into one")
    questions: dict[str, str] = {}
    train_ds, ids = build_prompt_dataset(cfg, tokenizer, cfg.resolve(cfg.data.first_train), log=log,
                                         questions=questions)
    eval_ds = None
    if cfg.data.eval and cfg.evaluation.eval_loss:
        eval_ds, eval_ids = build_prompt_dataset(cfg, tokenizer, cfg.resolve(cfg.data.eval), log=log,
                                                 questions=questions)
        ids.update(eval_ids)
    log(f"grpo: {len(train_ds)} prompts, {cfg.grpo.num_generations} completions each, rewards "
        + ", ".join(r.line() for r in cfg.grpo.rewards))
    return make_grpo_trainer(cfg, model=model, args=grpo_arguments(cfg, base_args), train_dataset=train_ds,
                             eval_dataset=eval_ds, tokenizer=tokenizer, callbacks=callbacks, prompt_ids=ids,
                             questions=questions)
