"""The step registry: the seven steps as plain data, the one list everything else reads.

Layer twin: ``screens/steps.py`` is the app's side (one name, two layers): it imports a
row's screen class, the one thing this module cannot do without importing the app.

The CLI's verbs (:data:`COMMANDS`), the app's screens, number keys, sidebar and command
palette, the hand-over keys and what each step takes (:attr:`Step.gives`, :attr:`Step.takes`)
and the import tests' module list all come from :data:`STEPS`; :func:`step` is the one look-up.
Imports nothing (no textual, no torch): the CLI and the app both read it at start-up.

A hand-over: a key on one step hands its selection (a :data:`KINDS` value: a run, a model, a
pair to compare) to another step and opens it. The app holds the last one as one
:class:`Handover` (kind, value, sequence number); the receiving screen takes it once, by its
number (``screens/base.py``: ``StepScreen`` builds the keys and ``open_in`` from these rows).

Adding a step: a row here, ``tuitune/commands/<verb>.py`` (``register(sub)``), the
engine functions it calls, and ``screens/<key>.py`` with the screen class named in
``screen``; the README's "Adding a step" says the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

#: What one step can hand to another, and the form of its value.
KINDS: dict[str, str] = {
    "run": "a run id (runs/<id>/)",
    "model": "a model folder, as a path",
    "pair": "(baseline, target, prompt): two models to compare on one prompt",
}


@dataclass(frozen=True)
class Give:
    """A hand-over key of a step: ``key`` hands the step's selection, a ``kind``, to ``target``."""

    key: str                  # the key on the giving step's screen
    target: str               # the step it opens (which must take ``kind``)
    label: str                # the footer's and palette's label
    kind: str                 # a key of KINDS
    tooltip: str = ""         # the palette's help line (the label when empty)


@dataclass(frozen=True)
class Handover:
    """The value one step handed to another: the app holds the last one; ``seq`` counts them."""

    kind: str
    value: object
    seq: int


@dataclass(frozen=True)
class Step:
    key: str                  # the app's mode name; the step's first CLI verb
    title: str                # shown in the sidebar and the command palette
    number: str               # the key that opens it
    summary: str              # one line for the command palette and help
    screen: str               # "module:ScreenClass", imported when the step is first opened
    verbs: tuple[str, ...]    # its CLI verbs: modules tuitune.commands.<verb>
    gives: tuple[Give, ...] = ()   # its hand-over keys
    takes: tuple[str, ...] = ()    # the KINDS it takes when another step hands one over

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
         gives=(Give("m", "merge", "Merge", "run"), Give("c", "chat", "Chat", "run")), takes=("run",)),
    Step("merge", "Merge", "5", "Merge an adapter into its base as a standalone model",
         "screens.merge:MergeScreen", ("merge", "export"),
         gives=(Give("o", "chat", "Open in Chat", "model", "Open in Chat: the merged model"),), takes=("run",)),
    Step("chat", "Chat", "6", "Chat with a model, an adapter or a checkpoint; compare two side by side",
         "screens.chat:ChatScreen", ("chat",), takes=("run", "model", "pair")),
    Step("eval", "Evaluate", "7", "Held-out loss and answers, the fine-tuned model against its base",
         "screens.evaluate:EvalScreen", ("eval",),
         gives=(Give("o", "chat", "Open in Chat", "pair", "The record's prompt, baseline and target side by side"),)),
)

#: Verbs that belong to no step: the sample workspace, and importing a GGUF model.
EXTRA_VERBS_FIRST = ("demo",)
EXTRA_VERBS_LAST = ("model",)

#: Every CLI verb, in the order ``tuitune --help`` lists them.
COMMANDS: tuple[str, ...] = (*EXTRA_VERBS_FIRST, *(v for s in STEPS for v in s.verbs), *EXTRA_VERBS_LAST)


def step(key: str) -> Step:
    """The step whose key is ``key`` (KeyError when there is none): the one look-up."""
    for s in STEPS:
        if s.key == key:
            return s
    raise KeyError(key)


def give(key: str, target: str) -> Give:
    """Step ``key``'s hand-over to ``target`` (KeyError when it has none)."""
    for g in step(key).gives:
        if g.target == target:
            return g
    raise KeyError(f"{key} -> {target}")


def handover_problems() -> list[str]:
    """What is wrong with the hand-over rows (empty when nothing): a target that is not a step, a
    kind not in KINDS, a target that does not take the kind, a key given twice on one step."""
    keys = {s.key for s in STEPS}
    problems = []
    for s in STEPS:
        problems += [f"{s.key} takes an unknown kind {k!r}" for k in s.takes if k not in KINDS]
        seen: set[str] = set()
        for g in s.gives:
            if g.kind not in KINDS:
                problems.append(f"{s.key} gives an unknown kind {g.kind!r}")
            if g.target not in keys:
                problems.append(f"{s.key} hands over to {g.target!r}, which is not a step")
            elif g.kind not in step(g.target).takes:
                problems.append(f"{s.key} hands a {g.kind} to {g.target}, which does not take one")
            if g.key in seen:
                problems.append(f"{s.key} has the key {g.key!r} twice")
            seen.add(g.key)
    return problems


__all__ = ["KINDS", "Give", "Handover", "Step", "STEPS", "COMMANDS", "step", "give", "handover_problems"]
