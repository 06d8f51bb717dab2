"""The app's side of the step registry: a row's screen class.

Layer twin: ``tuitune/steps.py`` is the engine's side (one name, two layers): the rows, the
look-up and the hand-overs live there; this module only imports a screen, which the engine
must not.
"""

from __future__ import annotations

import importlib

from tuitune.steps import Step


def screen_class(s: Step):
    """The step's screen class (its module is imported on the first call)."""
    module, _, cls = s.screen.partition(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["screen_class"]
