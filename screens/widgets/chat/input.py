"""The prompt box: a TextArea where Enter sends and ctrl+j (or shift+enter) starts a new line."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea


class ChatInput(TextArea):
    """Multi-line prompt input. Posts :class:`ChatInput.Submitted` on Enter (and clears itself)."""

    BINDINGS = [
        # Not in the footer: the box's placeholder says them ("Enter sends, ctrl+j new line").
        # Priority, so Enter reaches us before TextArea inserts a newline.
        Binding("enter", "submit", "Send", priority=True, id="chat-send", show=False),
        Binding("ctrl+j,shift+enter", "newline", "New line", priority=True, id="chat-newline", show=False,
                key_display="ctrl+j"),
    ]

    help_text = ("Your message. **Enter** sends it; **ctrl+j** (or shift+enter where the terminal "
                 "passes it through) starts a new line. Pasted text keeps its lines.")

    @dataclass
    class Submitted(Message):
        input: "ChatInput"
        text: str

        @property
        def control(self) -> "ChatInput":
            return self.input

    def __init__(self, **kwargs):
        kwargs.setdefault("soft_wrap", True)
        kwargs.setdefault("show_line_numbers", False)
        kwargs.setdefault("tab_behavior", "focus")
        kwargs.setdefault("compact", True)
        super().__init__(**kwargs)

    def action_submit(self) -> None:
        text = self.text
        if not text.strip():
            return
        self.post_message(self.Submitted(self, text))
        self.clear()

    def action_newline(self) -> None:
        start, end = self.selection
        self.replace("\n", start, end)
