"""The sidebar listing the steps, with the current one highlighted."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tuitune.steps import STEPS


class StepNav(Static):
    """A non-focusable list of steps: `1 Environment`, `2 Data`, ... Number keys switch."""

    DEFAULT_CSS = """
    StepNav { width: 18; height: 100%; padding: 1 1; background: $panel; }
    """

    def __init__(self, current: str, **kwargs):
        super().__init__(self._text(current), **kwargs)
        self.current = current

    @staticmethod
    def _text(current: str) -> Text:
        text = Text()
        text.append("steps\n\n", style="bold")
        for s in STEPS:
            line = f"{s.number} {s.title}\n"
            if s.key == current:
                text.append("▶ " + line, style="bold reverse")
            else:
                text.append("  " + line)
        return text
