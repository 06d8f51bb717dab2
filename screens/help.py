"""F1: help for the focused field, the screen, and its keys."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from screens.widgets.controls import field_label


def help_markdown(screen, focused) -> str:
    parts: list[str] = []
    if focused is not None:
        text = getattr(focused, "help_text", None) or (
            focused.tooltip if isinstance(focused.tooltip, str) else None)
        if text:
            # The field's label as the user sees it on screen, never a widget id.
            label = field_label(focused)
            parts.append(f"## This field: {label}\n\n{text}" if label else f"## This field\n\n{text}")
    screen_help = getattr(screen, "HELP", "")
    if screen_help:
        parts.append(screen_help.strip())
    keys = []
    seen = set()
    # The screen's and the app's own keys (from their public BINDINGS), then the focused
    # widget's shown ones: not the dozens of editing keys an Input has.
    sources = [getattr(type(screen), "BINDINGS", []), getattr(type(screen.app), "BINDINGS", [])]
    if focused is not None:
        sources.insert(0, [b for b in getattr(type(focused), "BINDINGS", [])
                           if isinstance(b, Binding) and b.show])
    for bindings in sources:
        for b in bindings:
            if not isinstance(b, Binding):
                b = Binding(*b)
            if b.description and b.description not in seen:
                seen.add(b.description)
                keys.append(f"| `{b.key_display or b.key}` | {b.description} |")
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
