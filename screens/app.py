"""The Textual app: one mode per step, number keys between them, F1 help, ctrl+p palette.

Importing this module stays light (no torch): each step screen is imported when it
is first opened, and heavy work runs in workers or separate processes.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import Iterable

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from screens.help import HelpScreen, help_markdown
from screens.steps import STEPS, Step
from tuitune.doctor import run_checks_subprocess
from tuitune.workspace import Workspace


def _factory(s: Step):
    return lambda: s.screen_class()()


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
    ]

    def __init__(self, workspace: str | Path = ".", start: str | None = None, doctor=None):
        super().__init__()
        self.workspace = Workspace.at(workspace)
        # How the Environment step gets its report; tests pass a fixed one.
        self.doctor = doctor or run_checks_subprocess
        # Hand-over between steps: Train sets selected_run before opening Merge or Chat;
        # Merge sets selected_model before opening Chat.
        self.selected_run: str | None = None
        self.selected_model: str | None = None
        # The Train screen's clock and GPU probe (tests inject fixed ones).
        self.clock = time.time
        self.gpu_probe = None
        self.start_step = start or STEPS[0].key
        self.sub_title = str(self.workspace.root)

    def on_mount(self) -> None:
        self.switch_mode(self.start_step)

    def action_goto(self, key: str) -> None:
        if self.current_mode != key:
            self.switch_mode(key)

    def action_leave_field(self) -> None:
        """Esc leaves a text field, so the number keys switch steps again."""
        self.screen.set_focus(None)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(help_markdown(self.screen, self.focused)))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for s in STEPS:
            yield SystemCommand(f"Go to {s.title}", s.summary, partial(self.action_goto, s.key))
        yield SystemCommand("Help", "Help for the focused field and this screen's keys", self.action_help)
        yield SystemCommand("Quit", "Quit tuitune (runs keep going)", self.exit)
        yield from (c for c in super().get_system_commands(screen) if c.title in ("Theme", "Keys"))


def run_app(workspace: str | Path = ".") -> int:
    TuituneApp(workspace).run()
    return 0
