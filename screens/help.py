"""F1: help for the focused field, the screen, and its keys."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown


def help_markdown(screen, focused) -> str:
    parts: list[str] = []
    if focused is not None:
        text = getattr(focused, "help_text", None) or (
            focused.tooltip if isinstance(focused.tooltip, str) else None)
        if text:
            label = focused.id or type(focused).__name__
            parts.append(f"## This field: `{label}`\n\n{text}")
    screen_help = getattr(screen, "HELP", "")
    if screen_help:
        parts.append(screen_help.strip())
    keys = []
    seen = set()
    for key, active in screen.active_bindings.items():
        b = active.binding
        if b.description and (b.action, b.description) not in seen:
            seen.add((b.action, b.description))
            keys.append(f"| `{active.binding.key_display or key}` | {b.description} |")
    if keys:
        parts.append("## Keys\n\n| key | does |\n|---|---|\n" + "\n".join(keys))
    return "\n\n".join(parts) or "No help here."


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close help")]

    def __init__(self, markdown: str):
        super().__init__()
        self._markdown = markdown

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(self._markdown)

    def action_dismiss(self) -> None:
        self.dismiss(None)
