"""The one exception type a user is meant to read, and lines that know the setting they are about.

An error (or a note, :class:`Note`) about one setting holds that setting as data, not only in
its words: ``field`` is the setting's name (a config field such as ``data.train``, a form's
field such as ``max_shard_size``), ``flag`` the CLI's name for it (``--`` and the field's last
part with dashes, unless given: ``--no-verify``, ``-o``), and the text says :data:`FIELD` where
the setting is named. ``str()`` is the CLI's line, the flag in that place (what the CLI has
always printed); :meth:`Note.said` is a screen's line, the label of its control in that place.
Each screen maps field -> label from the controls it has (``screens/workers.py`` ``failure``
and ``one_line`` take that map); no screen rewrites an engine message with a regex.

Where the fix itself differs by surface (a flag to pass in a shell, a control to use in the
TUI), ``fix`` is the CLI's end of the line and ``tui_fix`` the TUI's (both may say
:data:`FIELD`). Example::

    TuituneError(f"{FIELD} {text!r}: write a size such as 500MB", field="max_shard_size")
    # CLI: --max-shard-size 'abc': write a size ...     Merge screen: max shard 'abc': write a size ...
"""

from __future__ import annotations

from typing import Mapping

#: Where a line names its setting: the flag in the CLI, the control's label in the TUI. A
#: private-use character (not whitespace, never in a path or a value a message quotes).
FIELD = "\ue000"


def flag_of(field: str) -> str:
    """The CLI flag of a setting: ``max_shard_size`` -> ``--max-shard-size``."""
    return "--" + field.rpartition(".")[2].replace("_", "-")


def _one(text: str) -> str:
    return " ".join(str(text).split("\n")).strip()


class Note(str):
    """A line for the user (a note, a warning, an error's words) about one setting.

    It is the CLI's text (a ``str``: print it, join it, write it as it is); :meth:`said` is
    the same line in a screen's words.
    """

    field: str | None
    flag: str | None

    def __new__(cls, text: str, *, field: str | None = None, flag: str | None = None, fix: str = "",
                tui_fix: str | None = None) -> "Note":
        flag = flag or (flag_of(field) if field else None)
        self = super().__new__(cls, _one(str(text) + fix).replace(FIELD, flag or ""))
        self.field, self.flag = field, flag
        self._tui = _one(str(text) + (fix if tui_fix is None else tui_fix))
        return self

    def said(self, labels: Mapping[str, str] | None = None) -> str:
        """The line with the setting named by ``labels[field]`` (a screen's control label).

        A field the screen has no label for reads as its words (``max shard size``), never a flag.
        """
        if self.field is None:
            return self._tui
        labels = labels or {}
        short = self.field.rpartition(".")[2]
        label = labels.get(self.field) or labels.get(short) or short.replace("_", " ")
        return self._tui.replace(FIELD, label)


def said(text: str, labels: Mapping[str, str] | None = None) -> str:
    """``text`` in a screen's words: a :class:`Note`'s :meth:`Note.said`, any other text as it is."""
    return text.said(labels) if isinstance(text, Note) else str(text)


class TuituneError(Exception):
    """A problem with the user's input or machine, said in one line.

    The message names the file, row or field and what to do about it. The CLI
    prints it as ``error: <message>`` and exits 2; the TUI shows it in place, in its
    words (:meth:`said`): the module docstring says how ``field``, ``flag``, ``fix`` and
    ``tui_fix`` make one message read right on both.
    """

    def __init__(self, message: str, *, field: str | None = None, flag: str | None = None, fix: str = "",
                 tui_fix: str | None = None):
        self.note = Note(message, field=field, flag=flag, fix=fix, tui_fix=tui_fix)
        super().__init__(str(self.note))

    @property
    def field(self) -> str | None:
        return self.note.field

    @property
    def flag(self) -> str | None:
        return self.note.flag

    def said(self, labels: Mapping[str, str] | None = None) -> str:
        """The message as a screen shows it: ``labels`` maps a field to its control's label."""
        return self.note.said(labels)


def first_line(exc: BaseException) -> str:
    """``Type: the first line of the message``, at most 300 characters: a library error said in one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
