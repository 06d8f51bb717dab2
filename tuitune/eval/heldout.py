"""Which held-out file an evaluation scores, and why: one rule for the CLI, the screen and the report.

The file a user gives (``--data``, the screen's data field); else the run's ``data.eval``;
else the test side of the split whose train side is the run's training file, found through
the split's manifest (``split.json`` beside it: same file name, same sha256, see
:func:`tuitune.data.split.held_out_of`). Nothing else: a ``test.jsonl`` that merely sits in
the same folder may be another file's split, so without a manifest that ties it to the
run's training data the evaluation refuses and says to pass ``--data FILE``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from tuitune.errors import FIELD, TuituneError
from tuitune.sources import ModelSource

GIVEN, DATA_EVAL, SPLIT = "given", "data.eval", "split"


@dataclass
class HeldOut:
    """The file an evaluation scores, where it came from, and (once counted) its records."""

    path: Path
    origin: str                  # GIVEN, DATA_EVAL or SPLIT
    note: str = ""               # "the test side of the split of medqa.jsonl (data/split.json)"
    records: int | None = None   # the whole file's records
    brief: str = ""              # the note in a few words: "test side of data/split.json"

    def line(self, base: str | os.PathLike | None = None, evaluated: int | None = None, brief: bool = False) -> str:
        """``data/split/test.jsonl, 36 records (the test side of ...)``; paths relative to ``base``."""
        n = "" if self.records is None else f", {self.records} record{'s' if self.records != 1 else ''}"
        if evaluated is not None and self.records is not None and evaluated < self.records:
            n += f" (the first {evaluated} evaluated)"
        note = self.brief if brief else self.note
        return f"{shown(self.path, base)}{n}" + (f" ({note})" if note else "")

    def as_dict(self, base: str | os.PathLike | None = None) -> dict:
        return {"file": shown(self.path, base), "records": self.records, "origin": self.origin, "note": self.note}


def shown(path: str | os.PathLike, base: str | os.PathLike | None = None) -> str:
    """``path`` relative to ``base`` (default: the current folder) when inside it, else absolute."""
    p = Path(os.path.normpath(Path(path).absolute()))  # "data/split/../a.jsonl" reads data/a.jsonl
    try:
        return p.relative_to(Path(os.path.normpath(Path(base or ".").absolute()))).as_posix()
    except ValueError:
        return str(p)


def run_config(src: ModelSource):
    """The run's frozen config (None when ``src`` is not a run)."""
    if src.config_path is None:
        return None
    from tuitune.config import load_config

    return load_config(src.config_path, workspace=src.run_dir.parent.parent if src.run_dir else None)


def default_data(src: ModelSource, cfg, base: str | os.PathLike | None = None) -> HeldOut:
    """The run's held-out file (its data.eval, else its split's test side); TuituneError says what to pass."""
    from tuitune.data.split import held_out_of

    if cfg is None:
        raise TuituneError(f"{src.label} is not a run, so no held-out file belongs to it; ", field="data",
                           fix=f"give {FIELD} FILE (a conversation JSONL the model never trained on)",
                           tui_fix=f"give a file in {FIELD} (a conversation JSONL the model never trained on)")
    if cfg.data.eval:
        return HeldOut(cfg.resolve(cfg.data.eval), DATA_EVAL, "the run's data.eval", brief="the run's data.eval")
    found, refused = [], []
    trained = {}
    if src.run_dir is not None:
        from tuitune.train.runfolder import RunFolder

        trained = RunFolder(src.run_dir).read_state().get("trained_on") or {}
    for entry in cfg.data.sources():
        train = cfg.resolve(entry.path)
        side = held_out_of(train, show=lambda p: shown(p, base), trained=trained.get(str(entry.path)))
        (found if side.test is not None else refused).append((entry.path, side))
    if len(found) == 1:
        side = found[0][1]
        source = shown(side.manifest.parent / side.source, base)  # the manifest names it from its folder
        manifest = shown(side.manifest, base)
        return HeldOut(side.test, SPLIT, f"test side of the split of {source} in {manifest}; the run trained "
                                         "on its train side", brief=f"test side of {manifest}")
    if found:
        tests = ", ".join(shown(side.test, base) for _, side in found)
        raise TuituneError(f"run {src.run} trained on the train side of {len(found)} splits; ", field="data",
                           fix=f"give {FIELD} FILE, one of {tests}", tui_fix=f"give a file in {FIELD}, one of {tests}")
    why = refused[0][1].why_not if len(refused) == 1 else "none of its training files has a split manifest " \
        "that names it as the train side"
    raise TuituneError(f"run {src.run} has no held-out file: no data.eval, and {why}; ", field="data",
                       fix=f"give {FIELD} FILE (held-out records the run never trained on)",
                       tui_fix=f"give a file in {FIELD} (held-out records the run never trained on)")


def count_records(path: Path) -> int:
    """Items in a JSON/JSONL file (unchecked: the evaluation checks each record when it loads them)."""
    st = path.stat()
    return _count(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _count(path: str, _mtime_ns: int, _size: int) -> int:
    """Counted once per version of the file (the screen asks again at each key typed in its form)."""
    from tuitune.data.io import iter_json_items

    return sum(1 for _ in iter_json_items(path))


def pick(src: ModelSource, cfg, data: str | os.PathLike | None, workspace: Path,
         base: str | os.PathLike | None = None) -> HeldOut:
    """The file given (read from the current folder, else the workspace), else :func:`default_data`."""
    if data is None or str(data).strip() == "":
        return default_data(src, cfg, base)
    path = Path(data).expanduser()
    if not path.is_absolute() and not path.exists() and (workspace / path).exists():
        path = workspace / path
    return HeldOut(path, GIVEN)


def preview(target: str, workspace: str | os.PathLike = ".", data: str | None = None,
            base: str | os.PathLike | None = None) -> HeldOut:
    """What an evaluation of ``target`` would score, counted, before anything loads (the screen's form)."""
    from tuitune.sources import resolve

    workspace = Path(workspace)
    src = resolve(target, workspace)
    held = pick(src, run_config(src), data, workspace, base)
    if not held.path.is_file():
        raise TuituneError(f"{shown(held.path, base)}: no such data file; ", field="data",
                           fix=f"give {FIELD} FILE", tui_fix=f"give a file in {FIELD}")
    held.records = count_records(held.path)
    return held


__all__ = ["HeldOut", "shown", "run_config", "default_data", "pick", "preview", "count_records"]
