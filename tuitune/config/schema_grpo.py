"""The run config's ``grpo:`` section (task grpo): generation, the loss, and the rewards.

Its own module so that schema.py stays one screen of sections; pydantic only, like the schema
(the reward names come from :mod:`tuitune.train.rewards`, which imports ``re`` only).
"""

from __future__ import annotations

import shlex
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

#: TRL's GRPO losses offered here (luspo and vespo need sequence-level importance sampling, not offered).
GRPO_LOSSES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo")


class RewardSpec(BaseModel):
    """One reward of the run: a built-in by name with its options, or the user's ``file.py:function``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(..., min_length=1, description="exact, contains, regex, length, or file.py:function")
    weight: float = Field(1.0, description="its share of the run's reward (the weighted sum of all)")
    pattern: Optional[str] = Field(None, description="exact: the answer's pattern (default #### <number>, else "
                                                     "the last number); regex: what the completion must match")
    text: Optional[str] = Field(None, description="contains: the text (default: the record's answer)")
    target_length: Optional[int] = Field(None, gt=0, description="length: tokens before the penalty starts")

    @model_serializer(mode="wrap")
    def _unset_left_out(self, handler):
        # In YAML a reward reads as the user wrote it: no "pattern: null" beside each name.
        return {k: v for k, v in handler(self).items() if v is not None}

    @model_validator(mode="after")
    def _known(self) -> "RewardSpec":
        from tuitune.train.rewards import check_spec

        problem = check_spec(self.name, {"pattern": self.pattern, "text": self.text,
                                         "target_length": self.target_length})
        if problem:
            raise ValueError(problem)
        return self

    def line(self) -> str:
        """``name weight=W key=value``: the form's one line (values quoted as a shell would)."""
        parts = [shlex.quote(self.name)]
        if self.weight != 1.0:
            parts.append(f"weight={self.weight:g}")
        for key in ("pattern", "text", "target_length"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={shlex.quote(str(value))}")
        return " ".join(parts)

    @classmethod
    def parse_line(cls, text: str) -> dict:
        """The inverse of :meth:`line`, as the dict the section holds; ValueError saying what to write."""
        try:
            name, *opts = shlex.split(text)
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}; quote a value that has spaces: pattern='#### -?\\d+'") from None
        out: dict = {"name": name}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if not sep or key not in cls.model_fields or key == "name":
                raise ValueError(f"{opt!r}: write options as weight=W, pattern=..., text=..., target_length=N "
                                 "after the reward's name")
            out[key] = value
        return out


class GrpoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    num_generations: int = Field(4, ge=2, description="completions sampled per prompt, scored against each other "
                                                      "(a group); the global batch counts completions, so it must "
                                                      "be a multiple of this")
    max_completion_length: int = Field(256, ge=1, description="longest completion in tokens (generation time "
                                                              "follows the longest in the batch)")
    temperature: float = Field(0.9, gt=0, le=2, description="sampling temperature of the completions (a group "
                                                            "needs different answers to learn anything)")
    beta: float = Field(0.0, ge=0, description="weight of the KL term to the reference (the base with the "
                                               "adapter off); 0: none, and no reference pass")
    loss_type: Literal[GRPO_LOSSES] = Field("dapo", description="how token losses are averaged: dapo (TRL's "
                                                                "default), grpo, dr_grpo, bnpo, cispo, sapo")
    epsilon: float = Field(0.2, gt=0, lt=1, description="clipping of the policy ratio (PPO's epsilon)")
    use_vllm: bool = Field(False, description="generate with vLLM in the training process (TRL's colocate "
                                              "mode; a GPU box with vllm installed)")
    rewards: list[RewardSpec] = Field(
        default_factory=lambda: [RewardSpec(name="exact")],
        description="what a completion is scored on, one a line: exact, contains, regex pattern='...', "
                    "length target_length=N, or your file.py:function; each with weight=W")

    @field_validator("rewards", mode="before")
    @classmethod
    def _lines(cls, v):
        # A reward may be written as its line (`regex pattern='^####'`), in YAML or the form.
        if not isinstance(v, list):
            return v
        if not v:
            raise ValueError("list at least one reward (exact, contains, regex, length, or file.py:function)")
        return [RewardSpec.parse_line(r) if isinstance(r, str) else r for r in v]
