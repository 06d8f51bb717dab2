"""``split``: a seeded, reproducible train/test split that can keep questions on one side."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from tuitune.errors import TuituneError

GROUP_BY = ("none", "input")


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

    def lines(self) -> list[str]:
        out = [f"train: {self.train} records, {self.train_questions} distinct questions → {self.train_path}",
               f"test:  {self.test} records, {self.test_questions} distinct questions → {self.test_path}"]
        if self.shared_questions:
            out.append(f"{self.shared_questions} questions are on both sides; group by input to keep "
                       "test questions unseen")
        else:
            out.append("no question is on both sides")
        return out


def group_key(rec: dict) -> str:
    from tuitune.data.convert import normalize_key
    from tuitune.data.preference import first_question

    return normalize_key(first_question(rec))


def split_records(records: list[dict], test_ratio: float = 0.3, seed: int = 42,
                  group_by: str | None = None) -> tuple[list[dict], list[dict]]:
    """Shuffle with ``seed`` and cut; with ``group_by="input"`` whole groups go to one side."""
    if not 0 < test_ratio < 1:
        raise TuituneError(f"--test-ratio {test_ratio}: must be between 0 and 1 (e.g. 0.3)")
    if group_by not in (None, *GROUP_BY):
        raise TuituneError(f"--group-by {group_by!r}: choose one of {', '.join(GROUP_BY)}")
    if len(records) < 2:
        raise TuituneError(f"{len(records)} record(s): a split needs at least 2")
    rng = random.Random(seed)
    target = max(1, round(len(records) * test_ratio))
    if group_by in (None, "none"):
        order = list(range(len(records)))
        rng.shuffle(order)
        test_idx, train_idx = order[:target], order[target:]
        if not train_idx:
            raise TuituneError(f"--test-ratio {test_ratio} leaves no training records; lower it")
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
        raise TuituneError(f"--test-ratio {test_ratio} leaves no training records; lower it")
    return [records[i] for i in train_idx], [records[i] for i in test_idx]


def split_file(src: str | os.PathLike, out_dir: str | os.PathLike | None = None, test_ratio: float = 0.3,
               seed: int = 42, group_by: str | None = None) -> SplitResult:
    from tuitune.data.io import load_records, write_records

    src = Path(src)
    records = load_records(src)
    train, test = split_records(records, test_ratio, seed, group_by)
    out = Path(out_dir) if out_dir else src.parent
    if out.exists() and not out.is_dir():
        raise TuituneError(f"{out}: is a file; -o takes a folder for train.jsonl and test.jsonl")
    tp, sp = out / "train.jsonl", out / "test.jsonl"
    if src.resolve() in (tp.resolve(), sp.resolve()):
        raise TuituneError(f"{src}: would be overwritten by the split; choose another -o folder")
    write_records(tp, train)
    write_records(sp, test)
    train_q, test_q = {group_key(r) for r in train}, {group_key(r) for r in test}
    groups = len(train_q | test_q) if group_by == "input" else None
    return SplitResult(str(tp), str(sp), len(train), len(test), groups,
                       len(train_q), len(test_q), len(train_q & test_q))
