"""The ``tuitune`` command line.

A bare ``tuitune`` opens the TUI on the workspace in the current folder;
``tuitune <verb>`` runs one step headless. Each verb lives in
``tuitune/commands/<verb>.py`` with ``register(subparsers)``; those modules stay
light (heavy imports happen inside the functions they call), so ``tuitune
--help`` never imports torch.

A user's mistake raises :class:`tuitune.errors.TuituneError`; it is printed as one
``error:`` line on stderr and the exit code is 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

from tuitune import __version__
from tuitune.errors import TuituneError

# The verbs, in the order the product walks through them. Each is a module in
# tuitune/commands/ with register(subparsers); a verb whose module is not there
# yet is simply not offered.


def available_commands() -> list[str]:
    from tuitune.steps import COMMANDS

    return [n for n in COMMANDS if importlib.util.find_spec(f"tuitune.commands.{n}") is not None]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``error: ...`` and exit 2, like every other failure."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {self.prog}: {message}\n")


def _verb(argv: list[str], names: list[str]) -> str | None:
    """The verb ``argv`` names (after ``-w DIR``), if it is one of ``names``; None for anything else."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-w", "--workspace"):
            i += 2
        elif arg.startswith("--workspace=") or (arg.startswith("-w") and not arg.startswith("--")):
            i += 1
        else:
            return arg if arg in names else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given the command line, only the verb it names (a script's `tuitune runs status`
    does not import every verb's module: 0.2 s of the start on a 2-core box)."""
    parser = _Parser(
        prog="tuitune",
        description="Fine-tune an LLM from the terminal. Without a verb, opens the TUI "
        "on the workspace in the current folder.",
    )
    parser.add_argument("--version", action="version", version=f"tuitune {__version__}")
    parser.add_argument(
        "-w", "--workspace", default=".", metavar="DIR",
        help="the workspace (default: the current folder): run ids and the paths inside its configs are "
        "read there; a path you type is read from the current folder, as any shell tool reads it",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    names = available_commands()
    verb = _verb(argv, names) if argv is not None else None
    for name in [verb] if verb else names:
        importlib.import_module(f"tuitune.commands.{name}").register(sub)
    return parser


def open_tui(workspace: str | Path) -> int:
    """Open the Textual app on ``workspace`` (imported lazily: the CLI stays light)."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        # Without a terminal the app cannot draw or read keys; it would wait, unseen, for ever.
        raise TuituneError(f"the TUI needs a terminal, and stdin or stdout here is not one; run `tuitune -w "
                           f"{workspace}` in a terminal, or a verb without the TUI (tuitune --help)")
    from screens.app import run_app

    return run_app(Path(workspace))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        if args.verb is None:
            return open_tui(args.workspace)
        return int(args.func(args) or 0)
    except TuituneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
