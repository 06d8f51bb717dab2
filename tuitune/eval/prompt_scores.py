"""A GRPO run's evaluation: held-out prompt records, each side's answers scored by the run's rewards.

The prompt-task branch of :mod:`tuitune.eval.run` (the rest, the held-out rule, the models, the
generation and the report's files, is that module's). What is scored is what training scored:

* the prompts are the records' messages as the trainer builds them (:func:`tuitune.data.prompts.messages_of`
  with the run's ``data.system``), rendered with the run's template;
* the rewards are the run's own (``grpo.rewards`` of its frozen config), as the functions the trainer
  gives TRL (:func:`tuitune.train.rewards.reward_functions`), called as TRL calls them: the rendered
  prompt, the completion, its token ids and the dataset's columns (``answer``, ``record``);
* per record and side: each reward, their weighted sum (None values left out, as TRL's ``nansum``),
  whether the final answer is right (``exact``: the run's own when it has one, else the built-in with
  its default pattern; only records with an answer count) and whether every ``regex`` reward (the
  format rewards) is satisfied.

A record's change (improved / worsened / same) is the change of its weighted reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuitune.errors import FIELD, TuituneError


def _ignore(*_a, **_k) -> None:
    """TRL's ``log_extra`` / ``log_metric`` for a reward: an evaluation logs nothing of its own."""


@dataclass
class RewardSet:
    """The run's rewards, ready to score: their specs, the names TRL logs them under, weights, functions."""

    specs: list
    labels: list[str]
    weights: list[float]
    funcs: list = field(default_factory=list)
    exact_func: object = None            # the run's first exact reward, or the built-in default
    format_labels: list[str] = field(default_factory=list)   # the regex rewards

    @classmethod
    def of_run(cls, src, cfg, checkpoints: bool = False) -> "RewardSet":
        """The rewards of the GRPO run ``src`` (its config ``cfg``); TuituneError when there are none.
        A user's ``file.py:function`` is imported here, before a model loads."""
        from tuitune.data.records import PROMPT_TASKS

        if cfg is None or cfg.task not in PROMPT_TASKS:
            what = f"run {src.run} is task {cfg.task}" if cfg is not None else f"{src.label} is not a run"
            raise TuituneError(f"prompt records are scored with a GRPO run's rewards (grpo.rewards), and {what}; "
                               f"evaluate a grpo run on them, or give {FIELD} with conversation records", field="data")
        if checkpoints:
            raise TuituneError(f"{FIELD} measures each checkpoint's held-out loss, and run {src.run} "
                               "learned from prompts with no answer to measure it on; evaluate a checkpoint "
                               "as RUN:checkpoint-N instead", field="checkpoints")
        return cls.of_specs(list(cfg.grpo.rewards), cfg.workspace)

    @classmethod
    def of_specs(cls, specs: list, workspace: Path) -> "RewardSet":
        """Rewards from their specs (:class:`tuitune.config.schema_grpo.RewardSpec`), a user's file read
        from ``workspace``."""
        from tuitune.train.rewards import labels, reward_functions

        funcs, weights = reward_functions(specs, workspace)
        names = labels(specs)
        exact = next((f for s, f in zip(specs, funcs) if s.name == "exact"), None)
        if exact is None:
            from tuitune.config.schema_grpo import RewardSpec

            exact = reward_functions([RewardSpec(name="exact")], workspace)[0][0]
        return cls(list(specs), names, weights, funcs, exact,
                   [n for s, n in zip(specs, names) if s.name == "regex"])

    def as_dicts(self) -> list[dict]:
        """What the report says of each reward: its name, the name it is logged under, weight, its line."""
        return [{"label": n, "name": s.name, "weight": w, "line": s.line()}
                for s, n, w in zip(self.specs, self.labels, self.weights)]

    def score(self, tokenizer, template: str, conversations: list[list[dict]], answers, references: list[str],
              where: list[str]) -> list[dict]:
        """Each record's scores for one side's answers (:class:`tuitune.generation.BatchAnswer`)."""
        from tuitune.templates import render_prompt

        out = []
        for msgs, a, ref, at in zip(conversations, answers, references, where):
            call = dict(prompts=[render_prompt(tokenizer, template, msgs)], completions=[a.text],
                        completion_ids=[list(a.ids)], answer=[ref], record=[at], trainer_state=None,
                        log_extra=_ignore, log_metric=_ignore)
            values = {n: f(**call)[0] for n, f in zip(self.labels, self.funcs)}
            total = sum(w * v for w, v in zip(self.weights, values.values()) if v is not None)
            rec = {"reward": total, "rewards": values,
                   "exact_pass": bool(self.exact_func(**call)[0]) if ref.strip() else None,
                   "format_ok": all(values[n] == 1.0 for n in self.format_labels) if self.format_labels else None}
            out.append(rec)
        return out

    def summary(self, answers, scores: list[dict]) -> dict:
        """One side's row of the report's summary: the reward means, exact and format rates, answer lengths."""
        from tuitune.eval.report import answer_stats

        def mean(values):
            values = [v for v in values if v is not None]
            return sum(values) / len(values) if values else None

        answered = [s["exact_pass"] for s in scores if s["exact_pass"] is not None]
        out = {"reward": mean(s["reward"] for s in scores),
               **{f"reward_{n}": mean(s["rewards"][n] for s in scores) for n in self.labels},
               "exact_rate": mean(float(x) for x in answered), "with_answer": len(answered),
               "format_rate": mean(float(s["format_ok"]) for s in scores) if self.format_labels else None}
        out.update(answer_stats(answers))
        return out


def load_prompt_records(path: Path) -> tuple[list[dict], list[str]]:
    """The file's prompt records, checked as training checks them, and where each is (``file line N``,
    the ``record`` column a reward's error names)."""
    from tuitune.data.prompts import load_prompts

    pairs = load_prompts(path)
    return [rec for _w, rec in pairs], [f"{Path(path).name} {w}" for w, _r in pairs]


def prompt_messages(rec: dict, system: str | None) -> tuple[list[dict], str]:
    """The messages the model completes (as the trainer builds them) and the reference answer ('' for none)."""
    from tuitune.data.prompts import messages_of

    return messages_of(rec, system), str(rec.get("answer") or "")


__all__ = ["RewardSet", "load_prompt_records", "prompt_messages"]
