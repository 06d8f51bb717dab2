"""The one exception type a user is meant to read."""


class TuituneError(Exception):
    """A problem with the user's input or machine, said in one line.

    The message names the file, row or field and what to do about it. The CLI
    prints it as ``error: <message>`` and exits 2; the TUI shows it in place.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")).strip())


def first_line(exc: BaseException) -> str:
    """``Type: the first line of the message``, at most 300 characters: a library error said in one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
