"""How the run's figures read on screen and in the CLI: durations, ages, steps, losses, tokens/s, rewards."""

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
