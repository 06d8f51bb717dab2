"""The one exception type a user is meant to read, and lines that know the setting they are about.

An error (or a note, :class:`Note`) about one setting holds that setting as data, not only in
its words: ``field`` is the setting's name (a config field such as ``data.train``, a form's
field such as ``max_shard_size``), ``flag`` the CLI's name for it (``--`` and the field's last
part with dashes, unless given: ``--no-verify``, ``-o``), and the text says :data:`FIELD` where
the setting is named. A line about two settings gives a tuple of each (the n-th FIELD names the
n-th field; a FIELD past the last names the last). ``str()`` is the CLI's line, the flag in that place (what the CLI has
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


def _fill(text: str, names: tuple[str, ...]) -> str:
    """``text`` with the n-th FIELD replaced by ``names[n]`` (the last name for any past it)."""
    if not names:
        return text
    parts = text.split(FIELD)
    out = [parts[0]]
    for i, part in enumerate(parts[1:]):
        out += [names[min(i, len(names) - 1)], part]
    return "".join(out)


class Note(str):
    """A line for the user (a note, a warning, an error's words) about one setting.

    It is the CLI's text (a ``str``: print it, join it, write it as it is); :meth:`said` is
    the same line in a screen's words.
    """

    field: str | None
    flag: str | None

    def __new__(cls, text: str, *, field: str | tuple[str, ...] | None = None,
                flag: str | tuple[str, ...] | None = None, fix: str = "", tui_fix: str | None = None) -> "Note":
        fields = (field,) if isinstance(field, str) else tuple(field or ())
        flags = (flag,) if isinstance(flag, str) else tuple(flag or ())
        flags = tuple(flags[i] if i < len(flags) and flags[i] else flag_of(f) for i, f in enumerate(fields))
        self = super().__new__(cls, _fill(_one(str(text) + fix), flags))
        self.fields, self.flags = fields, flags
        self.field, self.flag = (fields[0], flags[0]) if fields else (None, None)
        self._tui = _one(str(text) + (fix if tui_fix is None else tui_fix))
        return self

    def prefixed(self, head: str) -> "Note":
        """``head`` + this line, still knowing its fields (an f-string would make it plain text)."""
        note = super().__new__(type(self), head + self)
        note.__dict__.update(self.__dict__)
        note._tui = head + self._tui
        return note

    def said(self, labels: Mapping[str, str] | None = None) -> str:
        """The line with each setting named by ``labels[field]`` (a screen's control label).

        A field the screen has no label for reads as its words (``max shard size``), never a flag.
        """
        labels = labels or {}

        def label(field: str) -> str:
            short = field.rpartition(".")[2]
            return labels.get(field) or labels.get(short) or short.replace("_", " ")

        return _fill(self._tui, tuple(label(f) for f in self.fields))


def said(text, labels: Mapping[str, str] | None = None) -> str:
    """``text`` (a line or an error) in a screen's words: a :class:`Note`'s or a
    :class:`TuituneError`'s :meth:`said`, any other text as it is."""
    return text.said(labels) if isinstance(text, (Note, TuituneError)) else str(text)


class TuituneError(Exception):
    """A problem with the user's input or machine, said in one line.

    The message names the file, row or field and what to do about it. The CLI
    prints it as ``error: <message>`` and exits 2; the TUI shows it in place, in its
    words (:meth:`said`): the module docstring says how ``field``, ``flag``, ``fix`` and
    ``tui_fix`` make one message read right on both.
    """

    def __init__(self, message: str, *, field: str | tuple[str, ...] | None = None,
                 flag: str | tuple[str, ...] | None = None, fix: str = "", tui_fix: str | None = None):
        self.note = Note(message, field=field, flag=flag, fix=fix, tui_fix=tui_fix)
        super().__init__(str(self.note))

    def __str__(self) -> str:
        # The Note itself (a str): str(err) stays the CLI's line, and still knows its field.
        return self.note

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
