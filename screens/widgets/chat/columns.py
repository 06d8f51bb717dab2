"""The Chat step's answer columns: one transcript (two in compare mode), and the worker that streams into them.

:meth:`ChatColumns.answer` sends one prompt to every session in a thread worker; the
sessions answer together (:class:`tuitune.chat.Together`: token by token in turn on the
model), so both columns grow at once. The worker only posts messages (a piece of text,
coalesced per side to a few updates a second; a side's end with its stats or its
error), which the widget writes on the UI thread. :meth:`ChatColumns.stop` ends every
answer still being written where it is: its text stays, marked stopped. When every
session has answered, :class:`ChatColumns.Over` goes up to the screen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Static
from textual.worker import Worker, get_current_worker

from screens.widgets.chat.transcript import ChatTranscript
from screens.workers import failure
from tuitune.errors import said

POST_EVERY = 0.05          # seconds between streamed updates to the view
GROUP = "chat-generate"


class ChatColumns(Horizontal):
    """Titles and transcripts for side a (and b in compare mode); streams answers into them."""

    @dataclass
    class Over(Message):
        """Every session answered (or the generation failed or was stopped)."""

    @dataclass
    class _Started(Message):
        side: int
        who: str

    @dataclass
    class _Piece(Message):
        side: int
        text: str

    @dataclass
    class _Done(Message):
        side: int
        stats: object
        error: str = ""

    def __init__(self, labels: Mapping[str, str] | None = None, **kwargs):
        """``labels``: the screen's words for the engine's fields (an error names its field so)."""
        super().__init__(**kwargs)
        self._labels = labels
        self._blocks: dict[int, object] = {}
        self._together = None
        self.timings = True

    def compose(self) -> ComposeResult:
        for side in "ab":
            with Vertical(id=f"chat-col-{side}", classes="chat-column"):
                yield Static("", id=f"chat-title-{side}", classes="chat-title")
                yield ChatTranscript(id=f"chat-{side}")

    def set_title(self, side: int, title: str) -> None:
        # Wrapped, and a long name broken anywhere (fold): the model's name reads whole, never
        # just "A:" with the name pushed below the title's one line.
        self.query_one(f"#chat-title-{'ab'[side]}", Static).update(Text(title, overflow="fold"))

    def column(self, side: int) -> ChatTranscript:
        return self.query_one("#chat-b" if side else "#chat-a", ChatTranscript)

    async def add_user(self, prompt: str, sides: int) -> None:
        for i in range(sides):
            await self.column(i).add_user(prompt)

    async def clear(self) -> None:
        for i in range(2):
            await self.column(i).clear()

    def stop(self) -> None:
        """End every answer still being written, after its current token (safe from any thread)."""
        together = self._together
        if together is not None:
            together.stop()

    @work(thread=True, exclusive=True, exit_on_error=False, group=GROUP, description="answer")
    def answer(self, prompt: str, sessions: list) -> None:
        from tuitune.chat import Together

        worker = get_current_worker()
        together = self._together = Together(sessions, prompt)
        for side, session in enumerate(sessions):
            self.post_message(self._Started(side, session.source.label if session.source else "model"))
        bufs: dict[int, list[str]] = {side: [] for side in range(len(sessions))}
        last = dict.fromkeys(bufs, 0.0)
        try:
            for event in together:
                if worker.is_cancelled:  # the screen went away (or a new prompt): stop where we are
                    together.stop()
                if event.text:
                    bufs[event.side].append(event.text)
                now = time.monotonic()
                for side, buf in bufs.items():  # each side's text so far, at most every POST_EVERY
                    if buf and (now - last[side] >= POST_EVERY or (event.done and side == event.side)):
                        self.post_message(self._Piece(side, "".join(buf)))
                        buf.clear()
                        last[side] = now
                if event.done:
                    stats = event.answer.stats if event.answer and not event.error else None
                    error = said(event.error, self._labels) if event.error else ""
                    self.post_message(self._Done(event.side, stats, error))
        finally:
            self._together = None
        self.post_message(self.Over())

    async def on_chat_columns__started(self, message: _Started) -> None:
        message.stop()
        self._blocks[message.side] = await self.column(message.side).add_answer(message.who)

    async def on_chat_columns__piece(self, message: _Piece) -> None:
        message.stop()
        block = self._blocks.get(message.side)
        if block is not None:
            await block.write(message.text)

    async def on_chat_columns__done(self, message: _Done) -> None:
        message.stop()
        block = self._blocks.pop(message.side, None)
        if block is None:
            return
        if message.error:
            await block.finish(message.error, error=True)
            return
        st = message.stats
        await block.finish(st.line(timings=self.timings), stopped=st.finish == "stopped")
        if st.note:
            await self.column(message.side).add_note(f"note: {st.note}")

    @on(Worker.StateChanged)
    async def _failed(self, event: Worker.StateChanged) -> None:
        error = failure(event, self._labels) if event.worker.group == GROUP else None
        if error is None:
            return
        event.stop()
        blocks, self._blocks = list(self._blocks.values()), {}
        for block in blocks:
            await block.finish(error, error=True)
        if not blocks:
            await self.column(0).add_note(error, error=True)
        self.post_message(self.Over())
