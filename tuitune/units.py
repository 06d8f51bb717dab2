"""Sizes as a user writes and reads them (``2GB``, ``1.5GiB``), for the merge's shards and the probe's cap.

Standard library only; neither merge nor train owns it, so neither imports the other for it.
"""

from __future__ import annotations

import re

from tuitune.errors import FIELD, TuituneError


def parse_size(text: str | int, field: str = "max_shard_size") -> int:
    """``"2GB"`` → bytes (decimal units, as transformers' ``max_shard_size``; ``GiB`` binary); an error
    names ``field`` (the merge's shard size, the probe's memory cap)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*", str(text), flags=re.I)
    if not m:
        raise TuituneError(f"{FIELD} {text!r}: write a size such as 500MB, 2GB or 1GiB", field=field)
    num, unit = float(m.group(1)), m.group(2).upper()
    mult = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9, "T": 1e12, "TB": 1e12,
            "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}.get(unit)
    if mult is None or num <= 0:
        raise TuituneError(f"{FIELD} {text!r}: write a size such as 500MB, 2GB or 1GiB", field=field)
    return int(num * mult)


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
