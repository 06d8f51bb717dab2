"""The export formats: each a module in ``tuitune/export/`` that declares itself as ``FORMAT``.

A format says its name (``--format NAME``), how the screens name it, whether it writes a file or
a folder, its default output for a model, one line about it, whether it holds a GGUF (then the
shared steps find llama.cpp's converter before anything else and ``--type`` applies), and the
function that writes it into the export's temporary folder. Everything else an export does
(resolve the source, merge a run or adapter first, publish with ``--force`` semantics, clean up
on a failure) is the same for every format and lives in :mod:`tuitune.export.pipeline`.

The CLI's ``--format`` choices and help, the Merge screen's format choice and the error for an
unknown format all read :data:`FORMATS`. Adding a format is one file beside ``gguf.py``:
:func:`discover` imports every module of this package and registers its ``FORMAT``; a format
kept elsewhere (a plug-in, a test) calls :func:`register` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

from tuitune.errors import TuituneError

if TYPE_CHECKING:
    from tuitune.export.pipeline import ExportJob


@dataclass
class Written:
    """What a format's ``write`` left in the export's temporary folder."""

    path: Path                  # the file or folder that becomes OUT
    command: str                # how to run what was written, with OUT's final path
    gguf: Path | None = None    # the GGUF in it (the result names it and gives its size), if any


@dataclass(frozen=True)
class ExportFormat:
    """One export format, declared by its module as ``FORMAT``."""

    name: str                                # --format NAME
    label: str                               # how the screens name it ("GGUF", "Ollama")
    kind: Literal["file", "folder"]          # a folder is published whole; an existing one is moved aside
    output: str                              # default output for a model: "{stem}" its name, "{outtype}" --type
    description: str                         # one line: --format's help, the Merge dialog's tooltip
    write: Callable[[ExportJob], Written]    # writes into job.tmp (job.gguf(path) converts and checks)
    gguf: bool = True                        # holds a GGUF: llama.cpp's converter, --type, the read-back check

    @property
    def suffix(self) -> str:
        """The file name ending that says this format (``.gguf``); a folder format has none."""
        return Path(self.output).suffix if self.kind == "file" else ""

    def default_output(self, stem: str, outtype: str = "f16") -> str:
        """The output's name for a model called ``stem`` (``smol-f16.gguf``, ``smol-ollama``)."""
        return self.output.format(stem=stem, outtype=outtype)


#: The formats by name, in the order they are offered (the default, gguf, first).
FORMATS: dict[str, ExportFormat] = {}
DEFAULT_FORMAT = "gguf"


def register(fmt: ExportFormat) -> ExportFormat:
    """Offer ``fmt`` to the CLI, the Merge screen and :func:`~tuitune.export.export`."""
    if fmt.kind not in ("file", "folder"):
        raise ValueError(f"export format {fmt.name}: kind is 'file' or 'folder', not {fmt.kind!r}")
    if FORMATS.get(fmt.name, fmt) is not fmt:
        raise ValueError(f"export format {fmt.name} is declared twice")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> ExportFormat:
    """The format called ``name``; TuituneError listing the choices."""
    try:
        return FORMATS[name]
    except KeyError:
        raise TuituneError(f"--format {name}: choose {' or '.join(FORMATS)}") from None


def format_for_output(out: str | Path) -> ExportFormat:
    """The format an output's name says, for an export given no ``--format``: the file format whose
    ending it has (``-o smol.gguf``: gguf). A folder or another ending says none: TuituneError
    asking for ``--format`` with the choices."""
    name = Path(out).name.lower()
    for fmt in FORMATS.values():
        if fmt.suffix and name.endswith(fmt.suffix) and len(name) > len(fmt.suffix):
            return fmt
    choices = " or ".join(f"{f.name} ({f'a {f.suffix} file' if f.suffix else f'a {f.kind}'})" for f in FORMATS.values())
    raise TuituneError(f"-o {out}: its name says no format; add --format {choices}")


def discover() -> dict[str, ExportFormat]:
    """Register the ``FORMAT`` of every module in this package (the default first, then by name)."""
    import importlib
    import pkgutil

    package = __name__.rpartition(".")[0]
    found = []
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        module = importlib.import_module(f"{package}.{info.name}")
        fmt = getattr(module, "FORMAT", None)
        if isinstance(fmt, ExportFormat):
            found.append(fmt)
    for fmt in sorted(found, key=lambda f: (f.name != DEFAULT_FORMAT, f.name)):
        register(fmt)
    return FORMATS


__all__ = ["ExportFormat", "Written", "FORMATS", "DEFAULT_FORMAT", "register", "get_format", "format_for_output",
           "discover"]
