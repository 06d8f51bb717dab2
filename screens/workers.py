"""How a screen's thread worker reports a failure: one line, in the words the user reads.

A thread worker talks back only by messages (posted from its thread) or by its return
value, handled in ``on_worker_state_changed``; it never looks a widget up. When it
raises, the widget that started it shows :func:`failure` of the ``Worker.StateChanged``
event in place. Engine errors (``TuituneError``) are written for the user and read in the
screen's words: the screen passes ``labels`` (field -> its control's label) and the error
names its field by that label (``tuitune/errors.py``); anything else is unexpected and reads
``Type: message``, on one line.
"""

from __future__ import annotations

from typing import Mapping

from textual.worker import Worker, WorkerState


def one_line(error: BaseException | None, labels: Mapping[str, str] | None = None) -> str:
    """A worker's error as one line: a TuituneError's own words (its field named by ``labels``),
    others with their type."""
    from tuitune.errors import TuituneError

    if error is None:
        return "unknown error"
    if isinstance(error, TuituneError):
        return error.said(labels)
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text}"


def failure(event: Worker.StateChanged, labels: Mapping[str, str] | None = None) -> str | None:
    """The line to show when ``event`` says its worker failed; None for any other change.

    A worker cancelled before it failed (a newer request replaced it) says nothing: nobody
    waits for its answer any more.
    """
    worker = event.worker
    if event.state != WorkerState.ERROR or worker.is_cancelled:
        return None
    return one_line(worker.error, labels)
