"""The prompt box: a TextArea where Enter sends and ctrl+j (or shift+enter) starts a new line."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.message import Message
from textual.widgets import TextArea


class ChatInput(TextArea):
    """Multi-line prompt input. Posts :class:`ChatInput.Submitted` on Enter (and clears itself).

    Enter and ctrl+j are read in the box's own key handler (TextArea's documented way to
    change what a key inserts), in the order the keys were typed. They were priority
    bindings, which run when the app reads the key, before the keys typed just before it
    have reached the box: "hi⏎" arriving in one burst (a quick typist over SSH, tmux's
    send-keys) sent nothing and left "hi" in the box. The placeholder says the keys.
    """

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

    def check_consume_key(self, key: str, character: str | None = None) -> bool:
        """Enter and ctrl+j are the box's own here (so the footer shows no screen key for them)."""
        return key in self._OWN_KEYS or super().check_consume_key(key, character)

    _OWN_KEYS = ("enter", "ctrl+j", "shift+enter")

    async def _on_key(self, event: events.Key) -> None:
        if event.key in self._OWN_KEYS and not self.read_only:
            event.stop()
            event.prevent_default()
            self.action_submit() if event.key == "enter" else self.action_newline()
            return
        await super()._on_key(event)

    def action_submit(self) -> None:
        text = self.text
        if not text.strip():
            return
        self.post_message(self.Submitted(self, text))
        self.clear()

    def action_newline(self) -> None:
        start, end = self.selection
        self.replace("\n", start, end)
