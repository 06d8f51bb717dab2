"""The steps the app shows, in order: ``tuitune.steps``' registry, less the steps whose screen is not built.

Layer twin: ``tuitune/steps.py`` is the engine's side (one name, two layers).
"""

from __future__ import annotations

import importlib
import importlib.util

from tuitune.steps import STEPS as ALL_STEPS
from tuitune.steps import Step


def screen_class(s: Step):
    """The step's screen class (its module is imported on the first call)."""
    module, _, cls = s.screen.partition(":")
    return getattr(importlib.import_module(module), cls)


def _built(s: Step) -> bool:
    return importlib.util.find_spec(s.screen_module) is not None


#: The steps that are built; a step whose screen module does not exist yet is not shown.
STEPS: tuple[Step, ...] = tuple(s for s in ALL_STEPS if _built(s))
BUILT: frozenset[str] = frozenset(s.key for s in STEPS)


def step(key: str) -> Step:
    for s in STEPS:
        if s.key == key:
            return s
    raise KeyError(key)


def handover_keys(key: str) -> tuple[tuple[str, str, str], ...]:
    """(key, target step, label) for each hand-over of step ``key`` to a built step."""
    from tuitune.steps import handovers

    return handovers(key, set(BUILT))


__all__ = ["Step", "STEPS", "ALL_STEPS", "BUILT", "step", "screen_class", "handover_keys"]
