"""The frame every step screen shares: header, step sidebar, body, footer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header

from screens.widgets.stepnav import StepNav


class StepScreen(Screen):
    """Base class of a step. Subclasses set ``STEP`` and ``HELP`` and implement ``compose_body``."""

    STEP = ""
    HELP = ""

    @property
    def workspace(self):
        return self.app.workspace

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="frame"):
            yield StepNav(self.STEP, id="stepnav")
            with Vertical(id="body"):
                yield from self.compose_body()
        yield Footer(compact=True)

    def compose_body(self) -> ComposeResult:  # pragma: no cover - abstract
        raise NotImplementedError
