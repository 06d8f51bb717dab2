"""The Textual app: one mode per step, number keys between them, F1 help, ctrl+p palette.

Importing this module stays light (no torch): each step screen is imported when it
is first opened, and heavy work runs in workers or separate processes.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Iterable

from textual.actions import parse as parse_action
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from screens.base import StepScreen
from screens.help import HelpScreen, help_markdown
from screens.steps import screen_class
from tuitune.doctor import run_checks_subprocess
from tuitune.steps import KINDS, STEPS, Handover, Step, step
from tuitune.workspace import Workspace


def _factory(s: Step):
    return lambda: screen_class(s)()


def _handed(kind: str) -> property:
    """``app.selected_<kind>``: the hand-over's value when it is a ``kind`` (else None); setting it
    hands one over (how a test or a script gives a step its selection)."""
    return property(lambda app: app.handover.value if app.handover and app.handover.kind == kind else None,
                    lambda app, value: app.hand_over(kind, value))


class TuituneApp(App):
    """The tuitune TUI on one workspace."""

    TITLE = "tuitune"
    # The shell's stylesheet first, then one sheet per step screen (screens/<step>.tcss).
    # Absolute paths, so a subclass defined elsewhere (a bench, a test) finds them too.
    CSS_PATH = [str(Path(__file__).with_name("tuitune.tcss")),
                *sorted(str(p) for p in Path(__file__).parent.glob("*.tcss") if p.name != "tuitune.tcss")]
    MODES = {s.key: _factory(s) for s in STEPS}
    BINDINGS = [
        *[Binding(s.number, f"goto('{s.key}')", s.title, show=False, id=f"goto-{s.key}") for s in STEPS],
        Binding("f1", "help", "Help", id="help"),
        Binding("ctrl+p", "command_palette", "Commands", show=False),
        Binding("q", "quit", "Quit", id="quit"),
        Binding("escape", "leave_field", "Leave field", show=False, id="leave-field"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="ctrl-c-quit"),
        # Priority: focus moves when Tab is read, so keys typed right after it (a burst over a
        # slow link) go to the new field, not into the queue of the field being left.
        Binding("tab", "focus_next", "Next field", show=False, priority=True, id="focus-next"),
        Binding("shift+tab", "focus_previous", "Previous field", show=False, priority=True, id="focus-previous"),
    ]

    def __init__(self, workspace: str | Path = ".", start: str | None = None, doctor=None):
        super().__init__()
        self.workspace = Workspace.at(workspace)
        # How the Environment step gets its report; tests pass a fixed one.
        self.doctor = doctor or run_checks_subprocess
        #: The last hand-over between steps (Train's run to Merge or Chat, Merge's model and
        #: Evaluate's pair to Chat: the registry's ``gives``); each step takes it once.
        self.handover: Handover | None = None
        # The Train screen's clock and GPU probe (tests inject fixed ones).
        self.clock = time.time
        self.gpu_probe = None
        self.start_step = start or STEPS[0].key
        self.sub_title = str(self.workspace.root)
        #: Every step screen opened so far, by step key (StepScreen registers itself on mount).
        self.step_screens: dict[str, StepScreen] = {}

    selected_run = _handed("run")
    selected_model = _handed("model")
    selected_pair = _handed("pair")

    def hand_over(self, kind: str, value: object) -> Handover:
        """Keep ``value`` (a ``kind`` of ``tuitune.steps.KINDS``) for the next step to take."""
        if kind not in KINDS:
            raise KeyError(f"no hand-over kind {kind!r} (the kinds: {', '.join(KINDS)})")
        self.handover = Handover(kind, value, (self.handover.seq if self.handover else 0) + 1)
        return self.handover

    def on_mount(self) -> None:
        self.switch_mode(self.start_step)

    def action_goto(self, key: str) -> None:
        """Open step ``key``; a step with unsaved edits asks first (save / discard / stay)."""
        if self.current_mode == key:
            return
        current = self.screen
        if isinstance(current, StepScreen):
            current.confirm_leave(f"go to {step(key).title}", partial(self.switch_mode, key))
        else:
            self.switch_mode(key)

    async def action_quit(self) -> None:
        """Quit; with unsaved edits in a step, ask first (a second ctrl+c while asked quits)."""
        from screens.widgets.choice import ChoiceScreen

        if isinstance(self.screen, ChoiceScreen):
            self.exit()
            return
        dirty = [s for s in self.step_screens.values() if s.is_attached and s.unsaved_changes()]
        if not dirty:
            self.exit()
            return
        dirty[0].confirm_leave("quit", self.exit)

    def action_leave_field(self) -> None:
        """Esc leaves a text field, so the number keys switch steps again."""
        self.screen.set_focus(None)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(help_markdown(self.screen, self.focused)))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The palette: this step's actions, going to a step, every other step's actions, help."""
        here = screen if isinstance(screen, StepScreen) else None
        if here is not None:
            yield from step_commands(step(here.STEP), type(here), lambda action: partial(here.run_action, action),
                                     here)
        for s in STEPS:
            yield SystemCommand(f"Go to {s.title}", s.summary, partial(self.action_goto, s.key))
        for s in STEPS:
            if here is None or s.key != here.STEP:
                yield from step_commands(s, screen_class(s), lambda action, s=s: partial(self._run_in, s.key, action))
        yield SystemCommand("Help", "Help for the focused field and this screen's keys", self.action_help)
        yield SystemCommand("Quit", "Quit tuitune (runs keep going)", self.action_quit)
        yield from (c for c in super().get_system_commands(screen) if c.title in ("Theme", "Keys"))

    def _run_in(self, key: str, action: str) -> None:
        """Open step ``key``, then run ``action`` there (a palette entry of another step)."""
        def run() -> None:
            if self.current_mode == key:
                self.call_after_refresh(lambda: self.screen.run_action(action))

        if self.current_mode == key:
            run()
            return
        current = self.screen
        go = lambda: (self.switch_mode(key), run())  # noqa: E731
        if isinstance(current, StepScreen):
            current.confirm_leave(f"go to {step(key).title}", go)
        else:
            go()


#: Actions the app itself offers (navigation, help, quit): not repeated per step.
APP_ACTIONS = {"goto", "help", "command_palette", "quit", "leave_field"}


def step_commands(s: Step, cls: type, callback, screen: Screen | None = None) -> Iterable[SystemCommand]:
    """A step's palette entries, from its screen's BINDINGS (and ``ACTIONS`` for keyless ones).

    ``callback(action)`` makes the command's callback; with the live ``screen``, actions it
    disables right now (``check_action``) are left out.
    """
    seen: set[str] = set()
    entries: list[tuple[str, str, str]] = []
    for b in getattr(cls, "BINDINGS", []):
        b = b if isinstance(b, Binding) else Binding(*b)
        if not b.description:
            continue
        key = b.key_display or b.key.split(",")[0]
        entries.append((b.description, b.action, f"{b.tooltip or b.description} ({key})"))
    entries += list(getattr(cls, "ACTIONS", []))
    for title, action, help_text in entries:
        name, params = parse_action(action)[1:]
        if name in APP_ACTIONS or action in seen:
            continue
        if screen is not None and screen.check_action(name, params) is False:
            continue
        seen.add(action)
        yield SystemCommand(f"{s.title}: {title}", help_text, callback(action))


def run_app(workspace: str | Path = ".") -> int:
    TuituneApp(workspace).run()
    return 0
