"""Atomic writes: an interrupted command leaves the old file or the new one, never half."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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


def python_cmd() -> list[str]:
    """The interpreter for our child processes, without the current folder on ``sys.path``.

    ``python -m tuitune`` run from a folder that holds a ``tuitune/`` directory (a clone of
    this repository, say) would import that directory instead of the installed package;
    ``-P`` (Python 3.11+) leaves the current folder out.
    """
    import sys

    return [sys.executable, "-P"] if sys.version_info >= (3, 11) else [sys.executable]
