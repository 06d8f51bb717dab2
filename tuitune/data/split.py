"""``split``: a seeded, reproducible train/test split that can keep questions on one side.

A split writes ``train.jsonl``, ``test.jsonl`` and their manifest ``split.json`` into one
folder: the source file (its path relative to the manifest where that is short, and its
sha256), the seed, the test ratio, the grouping, and each side's file, record count and
sha256. A folder holds one split (the two files' names are fixed), so one manifest a folder,
replaced with them. Later steps ask :func:`held_out_of` for the test side that belongs to a
training file: the split whose train side is that very file, unchanged since (by hash).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from tuitune.data.records import first_question
from tuitune.errors import FIELD, TuituneError
from tuitune.fsutil import sha256_of

GROUP_BY = ("none", "input")
TRAIN, TEST, MANIFEST = "train.jsonl", "test.jsonl", "split.json"
#: What a split writes into its folder (a CLI refuses to replace the two data files without --force).
OUTPUTS = (TRAIN, TEST)
MANIFEST_KIND = "tuitune split"


@dataclass
class SplitResult:
    """What a split wrote; every count is of its own side (``groups``: the whole file's)."""

    train_path: str
    test_path: str
    train: int
    test: int
    groups: int | None = None        # distinct questions in the whole file, when grouped
    train_questions: int = 0         # distinct questions on the train side
    test_questions: int = 0          # distinct questions on the test side
    shared_questions: int = 0        # questions on both sides (0 when grouped)
    manifest_path: str = ""          # split.json beside the two files

    def lines(self) -> list[str]:
        out = [f"train: {self.train} records, {self.train_questions} distinct questions → {self.train_path}",
               f"test:  {self.test} records, {self.test_questions} distinct questions → {self.test_path}"]
        if self.shared_questions:
            out.append(f"{self.shared_questions} questions are on both sides; group by input to keep "
                       "test questions unseen")
        else:
            out.append("no question is on both sides")
        if self.manifest_path:
            out.append(f"manifest → {self.manifest_path} (Evaluate finds the test side of a run trained on "
                       f"{Path(self.train_path).name} through it)")
        return out


def group_key(rec: dict) -> str:
    from tuitune.data.convert import normalize_key

    return normalize_key(first_question(rec))


def split_records(records: list[dict], test_ratio: float = 0.3, seed: int = 42,
                  group_by: str | None = None) -> tuple[list[dict], list[dict]]:
    """Shuffle with ``seed`` and cut; with ``group_by="input"`` whole groups go to one side."""
    if not 0 < test_ratio < 1:
        raise TuituneError(f"{FIELD} {test_ratio}: must be between 0 and 1 (e.g. 0.3)", field="test_ratio")
    if group_by not in (None, *GROUP_BY):
        raise TuituneError(f"{FIELD} {group_by!r}: choose one of {', '.join(GROUP_BY)}", field="group_by")
    if len(records) < 2:
        raise TuituneError(f"{len(records)} record(s): a split needs at least 2")
    rng = random.Random(seed)
    target = max(1, round(len(records) * test_ratio))
    if group_by in (None, "none"):
        order = list(range(len(records)))
        rng.shuffle(order)
        test_idx, train_idx = order[:target], order[target:]
        if not train_idx:
            raise TuituneError(f"{FIELD} {test_ratio} leaves no training records; lower it", field="test_ratio")
        return [records[i] for i in train_idx], [records[i] for i in test_idx]
    groups: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault(group_key(rec), []).append(i)
    if len(groups) < 2:
        raise TuituneError("every record has the same question; grouped by input there is nothing to split")
    keys = list(groups)  # first-appearance order, then a seeded shuffle
    rng.shuffle(keys)
    test_idx: list[int] = []
    train_idx: list[int] = []
    for k in keys:
        g = groups[k]
        # Fill the test side up to the target, never splitting a group.
        if len(test_idx) < target and (len(test_idx) + len(g) <= target or not test_idx):
            test_idx.extend(g)
        else:
            train_idx.extend(g)
    if not train_idx:
        raise TuituneError(f"{FIELD} {test_ratio} leaves no training records; lower it", field="test_ratio")
    return [records[i] for i in train_idx], [records[i] for i in test_idx]


def split_file(src: str | os.PathLike, out_dir: str | os.PathLike | None = None, test_ratio: float = 0.3,
               seed: int = 42, group_by: str | None = None) -> SplitResult:
    from tuitune.data.io import load_records, write_records

    src = Path(src)
    records = load_records(src)
    train, test = split_records(records, test_ratio, seed, group_by)
    out = Path(out_dir) if out_dir else src.parent
    if out.exists() and not out.is_dir():
        raise TuituneError(f"{out}: is a file; {FIELD} takes a folder for train.jsonl and test.jsonl", field="out", flag="-o")
    tp, sp, mp = out / TRAIN, out / TEST, out / MANIFEST
    if src.resolve() in (tp.resolve(), sp.resolve(), mp.resolve()):
        raise TuituneError(f"{src}: would be overwritten by the split; choose another {FIELD} folder", field="out", flag="-o")
    if mp.exists() and read_manifest(out) is None:
        raise TuituneError(f"{mp}: exists and is not a split's manifest; move it, or choose another {FIELD} folder",
                           field="out", flag="-o")
    write_records(tp, train)
    write_records(sp, test)
    # The manifest last: a split cut short leaves an old manifest whose hashes no longer match.
    write_manifest(out, src, seed=seed, test_ratio=test_ratio, group_by=group_by or "none",
                   sides={"train": (TRAIN, len(train)), "test": (TEST, len(test))})
    train_q, test_q = {group_key(r) for r in train}, {group_key(r) for r in test}
    groups = len(train_q | test_q) if group_by == "input" else None
    return SplitResult(str(tp), str(sp), len(train), len(test), groups,
                       len(train_q), len(test_q), len(train_q & test_q), str(mp))


# --- the manifest -------------------------------------------------------------------------------

def _as_seen_from(folder: Path, path: Path) -> str:
    """``path`` relative to ``folder`` when that is short (the workspace can move), else absolute."""
    try:
        rel = Path(os.path.relpath(path.resolve(), folder.resolve()))
    except ValueError:  # another drive
        return str(path.resolve())
    return rel.as_posix() if rel.parts[:3].count("..") < 3 else str(path.resolve())


def write_manifest(folder: Path, src: Path, *, seed: int, test_ratio: float, group_by: str,
                   sides: dict[str, tuple[str, int]]) -> Path:
    from tuitune.fsutil import atomic_write_json

    manifest = {"kind": MANIFEST_KIND, "version": 1,
                "source": {"file": _as_seen_from(folder, src), "sha256": sha256_of(src)},
                "seed": seed, "test_ratio": test_ratio, "group_by": group_by}
    for side, (name, count) in sides.items():
        manifest[side] = {"file": name, "records": count, "sha256": sha256_of(folder / name)}
    return atomic_write_json(folder / MANIFEST, manifest)


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The split manifest in ``folder``, or None (none there, or not one of ours)."""
    try:
        m = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(m, dict) and m.get("kind") == MANIFEST_KIND and all(
        isinstance(m.get(side), dict) and isinstance(m[side].get("file"), str) for side in ("train", "test"))
    return m if ok else None


@dataclass
class HeldOutSide:
    """What :func:`held_out_of` found for a training file: the test side, or why there is none."""

    test: Path | None
    manifest: Path | None = None
    source: str = ""                 # the split's source, as the manifest names it
    why_not: str = ""                # one clause, when ``test`` is None


def held_out_of(train_file: str | os.PathLike, show=str, trained: str | None = None) -> HeldOutSide:
    """The test side of the split whose train side is ``train_file`` (same folder, name and content).

    ``show`` writes a path for the ``why_not`` clause (e.g. relative to the user's folder).
    ``trained``: the sha256 the file had when a run started on it (its run folder's state); a split
    redone since then has another train side, and its test side may hold what the run trained on.
    """
    train_file = Path(train_file)
    folder = train_file.parent
    m = read_manifest(folder)
    mp = folder / MANIFEST
    if m is None:
        beside = folder / TEST
        return HeldOutSide(None, why_not=f"{show(beside)} has no split manifest ({MANIFEST}) tying it to "
                                         f"{train_file.name}" if beside.is_file() else
                                         f"no split manifest ({MANIFEST}) beside {show(train_file)}")
    source = m["source"].get("file", "?") if isinstance(m.get("source"), dict) else "?"
    if m["train"]["file"] != train_file.name:
        return HeldOutSide(None, mp, source, f"{show(mp)} is the split of {source}, whose train side is "
                                              f"{m['train']['file']}, not {train_file.name}")
    if not train_file.is_file() or sha256_of(train_file) != m["train"].get("sha256"):
        return HeldOutSide(None, mp, source, f"{show(train_file)} is not the train side {show(mp)} describes "
                                              "(changed since the split)")
    if trained and trained != m["train"].get("sha256"):
        return HeldOutSide(None, mp, source, f"{show(mp)} was split again after the run started: its train side "
                                              "is not the file the run trained on")
    test = folder / m["test"]["file"]
    if not test.is_file() or sha256_of(test) != m["test"].get("sha256"):
        return HeldOutSide(None, mp, source, f"{show(test)} is missing or changed since the split {show(mp)} "
                                              "describes")
    return HeldOutSide(test, mp, source)
