"""Two runs side by side (``tuitune runs compare A B``): the settings that differ and the final figures.

The settings are the runs' frozen ``config.yaml`` files, validated and flattened as the Config
step shows them (``diff_against``), so a field an older config leaves out compares at its
default. The figures are what the Train dashboard shows, read through the same reader
(``RunFollower`` into a ``RunView``): status, steps, the last and best train and eval loss,
tokens/s (an ended run's whole-run average, a live run's recent rate), elapsed time and, for a
preference run (DPO, ORPO), its latest reward margin and accuracy; for a GRPO run, its reward (last
and best), each reward function's, the completions' length, the KL and the clipped share.
Headless: no textual, no torch.
"""

from __future__ import annotations

from typing import Any

from tuitune.errors import TuituneError
from tuitune.train.runview import RunView, Snapshot
from tuitune.train.formatting import (GRPO_SHOWN, format_duration, format_grpo, format_loss, format_rate,
                                      format_rewards, format_steps)
from tuitune.train.runfolder import LIVE, RunFolder, RunFollower, find_run


def read_run(run: RunFolder) -> Snapshot:
    """A run as it is now, its events read once to the end.

    The state is read before the events, as ``RunWatcher`` does: a run that has ended has
    written its last event by then.
    """
    state = run.status()
    view = RunView(run.id)
    follower = RunFollower(run)
    while True:
        view.feed_bytes(follower.read_bytes())
        if follower.at_end:
            break
    view.set_state(state)
    return view.snapshot()


def settings_diff(a: RunFolder, b: RunFolder, workspace=None) -> list[tuple[str, Any, Any]]:
    """(field, A's value, B's value) for each flattened config field that differs.

    A run without a readable ``config.yaml`` raises TuituneError naming its file.
    """
    from tuitune.config import load_config
    from tuitune.config.presets import diff_against

    configs = []
    for run in (a, b):
        if not run.config_path.is_file():
            raise TuituneError(f"{run.config_path}: run {run.id} has no config.yaml, so its settings are unknown")
        configs.append(load_config(run.config_path, workspace=run.read_state().get("workspace") or workspace))
    return diff_against(configs[1], base=configs[0])


def figures(snap: Snapshot) -> dict:
    """One run's final figures, as ``runs compare --json`` gives them."""
    best, best_eval = snap.best_loss, snap.best_eval
    # A GRPO run's highest reward (the chart's points: exact up to Series' bound, bucket means past it).
    best_reward = max(snap.reward_points, key=lambda p: p[1]) if snap.reward_points else None
    return {
        "status": snap.status, "error": snap.error, "step": snap.step, "total_steps": snap.total_steps,
        "loss": snap.loss, "best_loss": best[1] if best else None, "best_loss_step": best[0] if best else None,
        "eval_loss": snap.eval_loss, "best_eval_loss": best_eval[1] if best_eval else None,
        "best_eval_step": best_eval[0] if best_eval else None,
        # tokens/s as shown: an ended run's whole-run average, a live run's last window (rate)
        "tokens": snap.tokens, "tokens_per_s": snap.rate[0], "tokens_per_s_average": snap.average_tokens_per_s,
        "tokens_per_s_recent": snap.tokens_per_s, "elapsed": snap.elapsed,
        "rewards": dict(snap.rewards),  # a preference or GRPO run's latest reward figures (Snapshot.rewards)
        "best_reward": best_reward[1] if best_reward else None,
        "best_reward_step": best_reward[0] if best_reward else None,
    }


def compare_runs(workspace, a: str, b: str) -> dict:
    """Runs ``a`` and ``b`` (ids, unique parts of ids, or paths) side by side.

    An unknown run raises TuituneError naming it and listing the workspace's runs. A run
    whose settings cannot be read still has its figures; ``settings_note`` says why the
    settings are missing.
    """
    ra, rb = find_run(workspace, a), find_run(workspace, b)
    try:
        settings, note = settings_diff(ra, rb, workspace), None
    except TuituneError as exc:
        settings, note = None, str(exc)
    return {
        "a": ra.id, "b": rb.id,
        "settings": None if settings is None else [{"field": k, "a": va, "b": vb} for k, va, vb in settings],
        "settings_note": note,
        "figures": {"a": figures(read_run(ra)), "b": figures(read_run(rb))},
    }


# --- as text ----------------------------------------------------------------------------------------

def cell(value: Any) -> str:
    """A config value as a table shows it (lists comma-separated, None as ``-``)."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) or "[]"
    return str(value)


def _best(value, step) -> str:
    return "-" if value is None else f"{value:.4f} @ {step:g}"


def figure_rows(result: dict) -> list[tuple[str, str, str]]:
    """(figure, A, B) rows of ``compare_runs``' figures; the reward rows only for preference and GRPO runs."""
    fa, fb = result["figures"]["a"], result["figures"]["b"]
    text = {
        "status": lambda f: f["status"],
        "steps": lambda f: format_steps(f["step"], f["total_steps"]),
        "loss (last)": lambda f: format_loss(f["loss"]),
        "loss (best)": lambda f: _best(f["best_loss"], f["best_loss_step"]),
        "eval loss (last)": lambda f: format_loss(f["eval_loss"]),
        "eval loss (best)": lambda f: _best(f["best_eval_loss"], f["best_eval_step"]),
        "tokens/s": lambda f: format_rate(f["tokens_per_s"], recent=f["status"] in LIVE),
        "elapsed": lambda f: format_duration(f["elapsed"]),
    }
    rows = [(name, show(fa), show(fb)) for name, show in text.items()]
    for prefix, head in (("", "reward"), ("eval_", "eval reward")):
        ra, rb = dict(format_rewards(fa["rewards"], prefix)), dict(format_rewards(fb["rewards"], prefix))
        for label in dict.fromkeys([*ra, *rb]):
            rows.append((f"{head} {label}", ra.get(label, "-"), rb.get(label, "-")))
    others = {label: label for _key, label, _fmt in GRPO_SHOWN}
    others.update(reward="reward", completion="completion length")
    for prefix, head in (("", ""), ("eval_", "eval ")):
        ga, gb = dict(format_grpo(fa["rewards"], prefix)), dict(format_grpo(fb["rewards"], prefix))
        for label in dict.fromkeys([*ga, *gb]):  # the run's reward, each function's (reward NAME), the others
            rows.append((head + others.get(label, f"reward {label}"), ga.get(label, "-"), gb.get(label, "-")))
            if not prefix and label == "reward":
                rows.append(("reward (best)", *(_best(f["best_reward"], f["best_reward_step"]) for f in (fa, fb))))
    return rows


__all__ = ["read_run", "settings_diff", "figures", "compare_runs", "cell", "figure_rows"]
