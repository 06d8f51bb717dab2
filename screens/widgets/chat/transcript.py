"""A chat transcript: the user's messages and streamed answers, scrolling only when at the bottom.

The container is anchored to its end (``Widget.anchor``): while the user is at the
bottom, new text scrolls into view; once they scroll up to read, it stays put, and
scrolling back to the end re-anchors it.
"""

from __future__ import annotations

import re

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Markdown, Static

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def printable(text: str) -> str:
    """Control characters a model may write (bell, escape) as visible symbols."""
    return _CONTROL.sub(lambda m: "\u2421" if m.group() == "\x7f" else chr(0x2400 + ord(m.group())), text)


class AnswerBlock(Vertical):
    """One answer: a Markdown view fed through a MarkdownStream, then a stats line."""

    DEFAULT_CSS = """
    AnswerBlock { height: auto; margin: 0 0 1 0; }
    AnswerBlock > .chat-who { color: $accent; text-style: bold; }
    AnswerBlock > Markdown { margin: 0; padding: 0; }
    AnswerBlock > .chat-stats { color: $text-muted; }
    """

    def __init__(self, who: str, **kwargs):
        super().__init__(**kwargs)
        self.who = who
        self.text = ""
        self._stream = None

    def compose(self) -> ComposeResult:
        yield Static(Text(self.who), classes="chat-who")
        yield Markdown("", classes="chat-answer")
        yield Static("", classes="chat-stats")

    @property
    def markdown(self) -> Markdown:
        return self.query_one(Markdown)

    async def write(self, piece: str) -> None:
        self.text += piece
        if self._stream is None:
            self._stream = Markdown.get_stream(self.markdown)
        await self._stream.write(printable(piece))

    async def finish(self, stats_line: str, error: bool = False, stopped: bool = False) -> None:
        """The answer's end: its stats line (an error in red; a stopped answer's, which says so, in yellow)."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        stats = self.query_one(".chat-stats", Static)
        stats.update(Text(stats_line, style="bold red" if error else "yellow" if stopped else ""))
        if not self.text.strip() and not error:
            await self.markdown.update("*(stopped before its first word)*" if stopped else "*(an empty answer)*")


class ChatTranscript(VerticalScroll):
    """The conversation with one model (a column of its own in compare mode)."""

    DEFAULT_CSS = """
    ChatTranscript { height: 1fr; padding: 0 1 0 0; }
    ChatTranscript > .chat-user { margin: 0 0 1 0; padding: 0 1; background: $boost; }
    ChatTranscript > .chat-note { color: $text-muted; margin: 0 0 1 0; }
    ChatTranscript > .chat-note.error { color: $error; }
    """

    can_focus = True

    def on_mount(self) -> None:
        # Anchored: follows new text while at the bottom (short content sits at the bottom,
        # just above the prompt box, as in a terminal).
        self.anchor()

    async def add_user(self, text: str) -> None:
        await self.mount(Static(Text("you\n", style="bold") + Text(printable(text)), classes="chat-user"))
        self.scroll_end(animate=False)
        self.anchor()

    async def add_answer(self, who: str) -> AnswerBlock:
        block = AnswerBlock(who)
        await self.mount(block)
        return block

    async def add_note(self, text: str, error: bool = False) -> None:
        await self.mount(Static(Text(text), classes="chat-note error" if error else "chat-note"))

    async def clear(self) -> None:
        await self.query(".chat-user, .chat-note, AnswerBlock").remove()

    @property
    def answers(self) -> list[AnswerBlock]:
        return list(self.query(AnswerBlock))
