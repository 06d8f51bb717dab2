"""The step registry: the seven steps as plain data, the one list everything else reads.

Layer twin: ``screens/steps.py`` is the app's side (one name, two layers).

The CLI's verbs (:data:`COMMANDS`), the app's screens, number keys and command palette
(``screens/steps.py``), the keys that hand a run or a model from one step to another
(:func:`handovers`) and the import tests' module list all come from :data:`STEPS`.
Imports nothing (no textual, no torch): the CLI and the app both read it at start-up.

Adding a step: a row here, ``tuitune/commands/<verb>.py`` (``register(sub)``), the
engine functions it calls, and ``screens/<key>.py`` with the screen class named in
``screen``; the README's "Adding a step" says the rest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    key: str                  # the app's mode name; the step's first CLI verb
    title: str                # shown in the sidebar and the command palette
    number: str               # the key that opens it
    summary: str              # one line for the command palette and help
    screen: str               # "module:ScreenClass", imported when the step is first opened
    verbs: tuple[str, ...]    # its CLI verbs: modules tuitune.commands.<verb>
    handover: tuple[tuple[str, str, str], ...] = ()  # (key, target step, label): hand the selection on

    @property
    def screen_module(self) -> str:
        return self.screen.partition(":")[0]


STEPS: tuple[Step, ...] = (
    Step("env", "Environment", "1", "CUDA, GPUs, packages, disk and a VRAM estimate for a model",
         "screens.env:EnvScreen", ("env",)),
    Step("data", "Data", "2", "Convert a spreadsheet or JSON to conversations, split, inspect tokens",
         "screens.data:DataScreen", ("data",)),
    Step("config", "Config", "3", "Edit and validate a run's YAML config, from a preset",
         "screens.config:ConfigScreen", ("config",)),
    Step("train", "Train", "4", "Start, follow, stop and resume detached training runs",
         "screens.train:TrainScreen", ("train", "runs"),
         handover=(("m", "merge", "Merge"), ("c", "chat", "Chat"))),
    Step("merge", "Merge", "5", "Merge an adapter into its base as a standalone model",
         "screens.merge:MergeScreen", ("merge", "export"), handover=(("o", "chat", "Open in Chat"),)),
    Step("chat", "Chat", "6", "Chat with a model, an adapter or a checkpoint; compare two side by side",
         "screens.chat:ChatScreen", ("chat",)),
    Step("eval", "Evaluate", "7", "Held-out loss and answers, the fine-tuned model against its base",
         "screens.evaluate:EvalScreen", ("eval",), handover=(("o", "chat", "Open in Chat"),)),
)

#: Verbs that belong to no step: the sample workspace, and importing a GGUF model.
EXTRA_VERBS_FIRST = ("demo",)
EXTRA_VERBS_LAST = ("model",)

#: Every CLI verb, in the order ``tuitune --help`` lists them.
COMMANDS: tuple[str, ...] = (*EXTRA_VERBS_FIRST, *(v for s in STEPS for v in s.verbs), *EXTRA_VERBS_LAST)


def step(key: str) -> Step:
    for s in STEPS:
        if s.key == key:
            return s
    raise KeyError(key)


def handovers(key: str, built: set[str] | None = None) -> tuple[tuple[str, str, str], ...]:
    """The (key, target, label) hand-overs of step ``key`` whose target is built (all when ``built`` is None)."""
    return tuple(h for h in step(key).handover if built is None or h[1] in built)


__all__ = ["Step", "STEPS", "COMMANDS", "step", "handovers"]
