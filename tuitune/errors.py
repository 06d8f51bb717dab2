"""The one exception type a user is meant to read."""


class TuituneError(Exception):
    """A problem with the user's input or machine, said in one line.

    The message names the file, row or field and what to do about it. The CLI
    prints it as ``error: <message>`` and exits 2; the TUI shows it in place.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")).strip())
