"""Atomic writes, file modes and output checks shared by every writer.

An interrupted command leaves the old file or the new one, never half. Every file and
folder tuitune writes gets the mode ``open()``/``mkdir()`` would give under the current
umask (files ``0666 & ~umask``, folders ``0777 & ~umask``), temp names and renames
included: ``mkstemp``/``mkdtemp`` make 0600/0700 and safetensors writes 0600 shards, so
those are widened here, never left private by accident.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import threading
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Callable

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # set-and-restore: the only portable way to read it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode(executable: bool = False) -> int:
    """The mode ``open(path, "w")`` gives a new file (``0777 & ~umask`` for an executable)."""
    return (0o777 if executable else 0o666) & ~current_umask()


def dir_mode() -> int:
    """The mode ``mkdir()`` gives a new folder."""
    return 0o777 & ~current_umask()


def make_temp_dir(prefix: str = "tmp", dir: str | os.PathLike | None = None) -> Path:
    """``tempfile.mkdtemp`` with the mode ``mkdir`` would give (mkdtemp makes 0700).

    For a folder that is renamed into place as the user's output; scratch folders that
    are removed afterwards may stay private.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    os.chmod(path, dir_mode())
    return path


def fix_modes(tree: str | os.PathLike) -> Path:
    """Give ``tree`` (a file or a folder written by us or a library) the umask's modes.

    Folders get ``0777 & ~umask``; files ``0666 & ~umask``, or ``0777 & ~umask`` when they
    carry an execute bit. Links are left alone.
    """
    tree = Path(tree)
    fmode, xmode, dmode = file_mode(), file_mode(True), dir_mode()

    def fix(p: str, is_dir: bool) -> None:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            return
        want = dmode if is_dir else (xmode if st.st_mode & 0o111 else fmode)
        if stat.S_IMODE(st.st_mode) != want:
            os.chmod(p, want)

    if tree.is_dir() and not tree.is_symlink():
        fix(str(tree), True)
        for root, dirs, files in os.walk(tree):
            for d in dirs:
                fix(os.path.join(root, d), True)
            for f in files:
                fix(os.path.join(root, f), False)
    elif tree.exists():
        fix(str(tree), False)
    return tree


def sha256_of(path: str | os.PathLike) -> str:
    """The file's sha256, read in 1 MiB chunks (``hashlib.file_digest`` is Python 3.11+ only)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def slug(text: str, default: str = "run") -> str:
    """``text`` as a file name: runs of other characters become ``-``, at most 60 characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or default


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600; the file gets what open() would give
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")


# --- existing outputs ----------------------------------------------------------------------

def output_exists(path: str | os.PathLike) -> bool:
    """Whether writing ``path`` would replace something: a file, or a non-empty folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        return any(p.iterdir())
    return p.exists() or p.is_symlink()


def refuse_existing(path: str | os.PathLike, force: bool = False, folder: bool = False) -> None:
    """Raise the one-line error for an existing output unless ``force``.

    The CLI passes ``--force``; the TUI asks first (overwrite / new name / cancel) and then
    passes ``force=True``. ``folder``: the output is a folder published by
    :func:`publish_dir` (a model), so a file there is refused even with ``force``, and what is
    replaced is moved aside, never deleted.
    """
    from tuitune.errors import FIELD, TuituneError

    p = Path(path).expanduser()
    if folder and p.exists() and not p.is_dir():
        raise TuituneError(f"{path}: exists and is a file; choose a new output folder")
    if force or not output_exists(p):
        return
    kind = "folder exists and is not empty" if p.is_dir() else "exists"
    # The TUI asks before it replaces anything (overwrite / new name / cancel): its fix is that answer.
    raise TuituneError(f"{path}: {kind}; choose another output, or ", field="force",
                       fix=f"pass {FIELD} to replace it ({FORCE_KEPT})",
                       tui_fix=f"choose Overwrite to replace it ({FORCE_KEPT})")


def aside_path(out: str | os.PathLike) -> Path:
    """Where ``--force`` keeps what ``out`` held: ``out.replaced-<time>`` beside it (``-2``, ... if taken)."""
    import time

    out = Path(out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = out.with_name(f"{out.name}.replaced-{stamp}"), 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = out.with_name(f"{out.name}.replaced-{stamp}-{n}")
    return aside


def publish_dir(tmp: str | os.PathLike, out: str | os.PathLike) -> Path | None:
    """Rename the finished folder ``tmp`` to ``out``; returns where an existing non-empty ``out``
    was moved (``out.replaced-<time>``), never deleted, or None. An empty ``out`` is replaced."""
    tmp, out = Path(tmp), Path(out)
    aside = None
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    elif out.exists():
        aside = aside_path(out)
        os.replace(out, aside)
    os.replace(tmp, out)
    return aside


#: ``--force``'s one behaviour, said in the help of every verb that writes (the README says it too).
FORCE_KEPT = "the old one is kept beside it as NAME.replaced-<time>, never deleted"


def force_help(what: str = "OUT") -> str:
    """The help of a ``--force`` that replaces ``what``."""
    return f"replace an existing {what}; {FORCE_KEPT}"


@contextmanager
def kept_aside(*outputs: str | os.PathLike, force: bool, note: Callable[[str], None] = lambda line: None):
    """The CLI's ``--force`` for every verb: an output that exists is replaced only when the command
    succeeds, and what it held is kept as ``NAME.replaced-<time>`` beside it (:data:`FORCE_KEPT`).

    A folder is moved aside by :func:`publish_dir` when its writer publishes the new one; here it is
    only reported. A file is hard-linked (copied where links are refused) to its aside name before
    the writer runs, and every writer here replaces a file by renaming a new one over it, so the
    link keeps the old bytes; where the command fails, or leaves the file as it was, the link goes.
    Without ``force`` this does nothing: the writer refuses an existing output.
    """
    import shutil

    kept: list[tuple[Path, Path]] = []
    folders: list[tuple[Path, set[str]]] = []
    for out in map(lambda o: Path(o).expanduser(), outputs if force else ()):
        if out.is_dir() and output_exists(out):
            folders.append((out, {p.name for p in out.parent.glob(f"{glob_escape(out.name)}.replaced-*")}))
        elif out.is_file():
            aside = aside_path(out)
            try:
                os.link(out, aside)
            except OSError:
                shutil.copy2(out, aside)
            kept.append((out, aside))
    replaced = False
    try:
        yield
        replaced = True
    finally:
        for out, aside in kept:
            if not replaced or (out.exists() and os.path.samefile(out, aside)):
                aside.unlink(missing_ok=True)
            else:
                note(f"the file that was there is now {aside}")
    for out, before in folders:
        for p in sorted(out.parent.glob(f"{glob_escape(out.name)}.replaced-*")):
            if p.name not in before:
                note(f"the folder that was there is now {p}")


_NUMBERED = re.compile(r"^(?P<stem>.*?)-(?P<n>\d+)$")


def next_free_path(path: str | os.PathLike) -> Path:
    """``path`` if nothing is there, else the first free ``stem-2.ext``, ``stem-3.ext``, ...

    ``data/x.jsonl`` → ``data/x-2.jsonl``; ``data/x-2.jsonl`` → ``data/x-3.jsonl``;
    a folder ``models/r1-merged`` → ``models/r1-merged-2``. An empty folder counts as free.
    """
    p = Path(path)
    if not output_exists(p):
        return p
    name = p.name
    # Only the last suffix counts (x.tar.gz is rare; model folders have dots: Qwen2.5-7B).
    suffix = p.suffix if p.suffix and not p.is_dir() and len(p.suffix) <= 8 and p.suffix[1:].isalnum() else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    m = _NUMBERED.match(stem)
    base, n = (m.group("stem"), int(m.group("n"))) if m and int(m.group("n")) >= 2 else (stem, 1)
    while True:
        n += 1
        cand = p.with_name(f"{base}-{n}{suffix}")
        if not output_exists(cand):
            return cand


def python_cmd() -> list[str]:
    """The interpreter for our child processes, without the current folder on ``sys.path``.

    ``python -m tuitune`` run from a folder that holds a ``tuitune/`` directory (a clone of
    this repository, say) would import that directory instead of the installed package;
    ``-P`` (Python 3.11+) leaves the current folder out.
    """
    import sys

    return [sys.executable, "-P"] if sys.version_info >= (3, 11) else [sys.executable]
