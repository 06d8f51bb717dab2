"""The steps the app shows, in order. A step appears here only once it is built."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    key: str      # the mode name and the CLI verb it mirrors
    title: str    # shown in the sidebar and the command palette
    number: str   # the key that opens it
    target: str   # "module:ScreenClass", imported when the step is first opened
    summary: str  # one line for the command palette and help

    def screen_class(self):
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)


ALL_STEPS: tuple[Step, ...] = (
    Step("env", "Environment", "1", "screens.env:EnvScreen",
         "CUDA, GPUs, packages, disk and a VRAM estimate for a model"),
    Step("data", "Data", "2", "screens.data:DataScreen",
         "Convert a spreadsheet or JSON to conversations, split, inspect tokens"),
    Step("config", "Config", "3", "screens.config:ConfigScreen",
         "Edit and validate a run's YAML config, from a preset"),
    Step("train", "Train", "4", "screens.train:TrainScreen",
         "Start, follow, stop and resume detached training runs"),
    Step("merge", "Merge", "5", "screens.merge:MergeScreen",
         "Merge an adapter into its base as a standalone model"),
    Step("chat", "Chat", "6", "screens.chat:ChatScreen",
         "Chat with a model, an adapter or a checkpoint; compare two side by side"),
)


def _built(s: Step) -> bool:
    return importlib.util.find_spec(s.target.partition(":")[0]) is not None


#: The steps that are built; a step whose screen module does not exist yet is not shown.
STEPS: tuple[Step, ...] = tuple(s for s in ALL_STEPS if _built(s))


def step(key: str) -> Step:
    for s in STEPS:
        if s.key == key:
            return s
    raise KeyError(key)
