"""How the run's figures read on screen and in the CLI: durations, ages, steps, losses, tokens/s, rewards
(a preference run's margin and accuracy, a GRPO run's rewards, completion length, KL and clipped share)."""

from __future__ import annotations

from typing import Mapping


def format_duration(seconds: float | None) -> str:
    """3s, 4m05s, 2h10m, 3d04h; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_age(seconds: float | None) -> str:
    """A coarse age for a table: 12s, 5m, 3.2h, 4d."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.0f}d"


def format_steps(step: int, total: int | None) -> str:
    return f"{step}/{total}" if total else str(step)


def format_loss(loss: float | None) -> str:
    return "-" if loss is None else f"{loss:.4f}"


def format_rate(tokens_per_s: float | None, recent: bool = False) -> str:
    """Tokens/s as the dashboard, ``runs compare`` and ``runs follow`` show it: ``21``, or
    ``21 (recent)`` for a live run's last window (an ended run shows its whole-run average)."""
    if tokens_per_s is None:
        return "-"
    return f"{tokens_per_s:,.0f}" + (" (recent)" if recent else "")


#: A preference run's reward figures shown beside its loss, with their short labels.
REWARDS_SHOWN = (("reward_margin", "margin"), ("reward_accuracy", "acc"))


def format_rewards(figures: Mapping[str, float], prefix: str = "") -> list[tuple[str, str]]:
    """(label, text) for the reward margin and accuracy in ``figures`` (an event, or a snapshot's
    ``rewards``; ``prefix`` "eval_": the eval ones). Empty for a run that is not a preference run."""
    out = []
    for name, label in REWARDS_SHOWN:
        value = figures.get(prefix + name)
        if value is not None:
            out.append((label, f"{value:.1%}" if name == "reward_accuracy" else f"{value:.4f}"))
    return out


#: A GRPO run's figures shown after its rewards: (the name events use, label, format).
GRPO_SHOWN = (("completion_length", "completion", "{:.1f} tok"), ("kl", "kl", "{:.4f}"),
              ("clip_ratio", "clipped", "{:.1%}"))


def reward_names(figures: Mapping[str, float], prefix: str = "") -> list[str]:
    """A GRPO run's reward functions, as its figures name them (``reward_<name>_mean``), in their order."""
    head = prefix + "reward_"
    return [k[len(head):-len("_mean")] for k in figures
            if k.startswith(head) and k.endswith("_mean") and k != head + "mean"]


def _spread(mean: float, std: float | None) -> str:
    return f"{mean:.3f}" + ("" if std is None else f"±{std:.3f}")


def format_grpo(figures: Mapping[str, float], prefix: str = "") -> list[tuple[str, str]]:
    """(label, text) for a GRPO run's figures in ``figures`` (an event, or a snapshot's ``rewards``;
    ``prefix`` "eval_": the eval ones): the run's reward (the weighted sum: mean±spread over the
    completions), each reward function's, then the completions' mean length, the KL to the reference
    and the share of clipped tokens. Empty for a run that is not a GRPO run."""
    mean = figures.get(prefix + "reward_mean")
    if mean is None:
        return []
    out = [("reward", _spread(mean, figures.get(prefix + "reward_std")))]
    for name in reward_names(figures, prefix):
        value = figures[f"{prefix}reward_{name}_mean"]
        if value is not None:
            out.append((name, _spread(value, figures.get(f"{prefix}reward_{name}_std"))))
    for key, label, fmt in GRPO_SHOWN:
        value = figures.get(prefix + key)
        if value is not None:
            out.append((label, fmt.format(value)))
    return out


def format_scores(reward: float | None, scores: Mapping[str, float | None]) -> str:
    """A sampled completion's reward and each reward function's score: ``reward 0.550 (exact 0, regex 1,
    length -0.5)``; a function that skipped it shows ``-``."""
    each = ", ".join(f"{name} {'-' if v is None else f'{v:g}'}" for name, v in scores.items())
    return f"reward {'-' if reward is None else f'{reward:.3f}'}" + (f" ({each})" if each else "")
