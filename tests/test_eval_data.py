"""Which held-out file `tuitune eval RUN` scores, typed as a user types it (#20 item 2).

Every command is the real console script run in the workspace with relative paths. The
default is the run's data.eval, else the test side of the split whose train side is the
run's training file (through the split's manifest, split.json: same name, same sha256);
a test.jsonl that only sits beside the training file is another file's split and refused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, assert_one_line_error
from train_helpers import make_workspace, write_config

TUITUNE = str(Path(sys.executable).with_name("tuitune"))
QUICK = ("--max-samples", "2", "--max-new-tokens", "4")


def tuitune(ws: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``tuitune ARGS`` typed in the workspace ``ws`` (the console script, cwd = ws)."""
    return subprocess.run([TUITUNE, *args], cwd=ws, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_model) -> Path:
    """Two 2-step runs on the tiny model: `own` on data/self_cognition.jsonl, `held` on a split's train side."""
    ws = make_workspace(tmp_path_factory.mktemp("evaldata") / "ws", tiny_model)
    proc = tuitune(ws, "data", "split", "data/self_cognition.jsonl", "-o", "data/split", "--test-ratio", "0.2",
                   "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    steps = {"training.max_steps": 2, "training.save_steps": 2, "evaluation.prompts": []}
    write_config(ws, "own", **{"data.train": "data/self_cognition.jsonl", **steps})
    write_config(ws, "held", **{"data.train": "data/split/train.jsonl", **steps})
    for name in ("own", "held"):
        proc = tuitune(ws, "train", f"configs/{name}.yaml", "--foreground", "--name", name)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return ws


def test_the_split_writes_a_manifest_that_names_its_source_and_both_sides(ws):
    m = json.loads((ws / "data" / "split" / "split.json").read_text())
    assert m["source"]["file"] == "../self_cognition.jsonl"  # relative to the manifest
    from tuitune.fsutil import sha256_of

    assert m["source"]["sha256"] == sha256_of(ws / "data" / "self_cognition.jsonl")
    assert (m["seed"], m["test_ratio"], m["group_by"]) == (3, 0.2, "none")
    for side in ("train", "test"):
        lines = (ws / "data" / "split" / m[side]["file"]).read_text().splitlines()
        assert m[side]["records"] == len(lines) and m[side]["sha256"] == sha256_of(ws / "data" / "split" /
                                                                                      m[side]["file"])
    assert m["train"]["file"] == "train.jsonl" and m["test"]["file"] == "test.jsonl"


def test_another_files_split_beside_the_training_file_is_refused(ws, tmp_path):
    """The walk's defect: MedQA split into data/ next to data/self_cognition.jsonl; `eval own` scored it."""
    shutil.copy(ROOT / "sample_data" / "medqa_sample.xlsx", ws / "data" / "medqa_sample.xlsx")
    proc = tuitune(ws, "data", "convert", "data/medqa_sample.xlsx", "-o", "data/medqa.jsonl", "--preset", "medqa")
    assert proc.returncode == 0, proc.stderr
    proc = tuitune(ws, "data", "split", "data/medqa.jsonl")  # into data/, the file's folder
    assert proc.returncode == 0, proc.stderr
    try:
        line = assert_one_line_error(tuitune(ws, "eval", "own", *QUICK, "-o", "evals/own"),
                                     "run own has no held-out file", "no data.eval",
                                     "data/split.json is the split of medqa.jsonl", "--data FILE")
        assert (ws / "data" / "test.jsonl").is_file() and (ws / "data" / "split.json").is_file()
        assert str(ws) not in line  # paths as the user sees them, from the workspace
        assert not (ws / "evals" / "own").exists()
        # --data names it: then it is scored, and the first line says which file and how many records.
        proc = tuitune(ws, "eval", "own", "--data", "data/test.jsonl", *QUICK, "-o", "evals/own")
        assert proc.returncode == 0, proc.stderr[-2000:]
        n = len((ws / "data" / "test.jsonl").read_text().splitlines())
        assert proc.stderr.splitlines()[0] == f"data: data/test.jsonl, {n} records (the first 2 evaluated)"
    finally:
        for name in ("train.jsonl", "test.jsonl", "split.json"):
            (ws / "data" / name).unlink(missing_ok=True)


def test_a_run_on_a_splits_train_side_is_scored_on_its_test_side(ws):
    n = len((ws / "data" / "split" / "test.jsonl").read_text().splitlines())
    proc = tuitune(ws, "eval", "held", *QUICK, "-o", "evals/held")
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = proc.stderr.splitlines()[0]
    assert first == (f"data: data/split/test.jsonl, {n} records (the first 2 evaluated) (test side of the split "
                     "of data/self_cognition.jsonl in data/split/split.json; the run trained on its train side)")
    rep = json.loads((ws / "evals" / "held" / "report.json").read_text())
    assert rep["data"] == "data/split/test.jsonl" and rep["records"] == 2
    d = rep["summary"]["data"]
    assert (d["file"], d["records"], d["evaluated"], d["origin"]) == ("data/split/test.jsonl", n, 2, "split")
    md = (ws / "evals" / "held" / "report.md").read_text()
    assert f"- **data**: `data/split/test.jsonl`, 2 of {n} records (test side of the split of data/" in md
    # What the Evaluate screen shows before it runs: the same file, counted, and why.
    from tuitune.eval.heldout import preview

    held = preview("held", ws, base=ws)
    assert (held.line(ws), held.origin) == (first[len("data: "):].replace(" (the first 2 evaluated)", ""), "split")


def test_a_changed_or_moved_training_file_is_not_matched(ws, tmp_path):
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy, ignore=shutil.ignore_patterns("models"))
    os.symlink(ws / "models", copy / "models")
    reports = sorted((copy / "evals").glob("*")) if (copy / "evals").exists() else []
    train = copy / "data" / "split" / "train.jsonl"
    with train.open("a") as fh:  # one record more: the hash differs from the manifest's
        fh.write(train.read_text().splitlines()[0] + "\n")
    assert_one_line_error(tuitune(copy, "eval", "held", *QUICK), "data/split/train.jsonl is not the train side",
                          "data/split/split.json", "--data FILE")
    # Moved with its test file (no manifest goes along): the test.jsonl beside it is not the run's by proof.
    moved = copy / "data" / "moved"
    moved.mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        shutil.copy(ws / "data" / "split" / name, moved / name)
    cfg = copy / "runs" / "held" / "config.yaml"
    cfg.write_text(cfg.read_text().replace("data/split/train.jsonl", "data/moved/train.jsonl"))
    assert_one_line_error(tuitune(copy, "eval", "held", *QUICK), "data/moved/test.jsonl has no split manifest",
                          "--data FILE")
    assert (sorted((copy / "evals").glob("*")) if (copy / "evals").exists() else []) == reports  # nothing written
    # The run's data.eval comes before any split.
    cfg.write_text(cfg.read_text().replace("eval: null", "eval: data/moved/test.jsonl", 1))
    from tuitune.eval.heldout import preview

    held = preview("held", copy, base=copy)
    assert (held.origin, held.line(copy)) == ("data.eval", f"data/moved/test.jsonl, {held.records} records "
                                                           "(the run's data.eval)")


def test_a_split_redone_after_the_run_started_is_not_the_run_s(ws, tmp_path):
    """The run's state keeps the sha256 of each training file as it started: a split redone with
    --force has a new train side (and a test side that may hold what the run trained on)."""
    state = json.loads((ws / "runs" / "held" / "state.json").read_text())
    assert set(state["trained_on"]) == {"data/split/train.jsonl"}
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy, ignore=shutil.ignore_patterns("models"))
    os.symlink(ws / "models", copy / "models")
    proc = tuitune(copy, "data", "split", "data/self_cognition.jsonl", "-o", "data/split", "--test-ratio", "0.3",
                   "--seed", "9", "--force")
    assert proc.returncode == 0, proc.stderr
    assert_one_line_error(tuitune(copy, "eval", "held", *QUICK), "data/split/split.json was split again after the "
                          "run started", "--data FILE")


async def test_the_screen_names_the_file_and_its_records_before_anything_runs(ws):
    """The line under the target: the held-out file, its records and why; a run with none says what to give."""
    from textual.widgets import Input, Static

    from conftest import widget_text
    from screens.app import TuituneApp
    from tuitune.doctor import Report

    n = len((ws / "data" / "split" / "test.jsonl").read_text().splitlines())
    app = TuituneApp(ws, start="eval", doctor=lambda w: Report())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen

        async def shown_after(target: str, samples: str = "") -> str:
            screen.query_one("#eval-target", Input).value = target
            screen.query_one("#eval-samples", Input).value = samples
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            return " ".join(widget_text(screen.query_one("#eval-heldout", Static), 200).split())

        assert await shown_after("held") == (f"held-out data/split/test.jsonl, {n} records (test side of "
                                             "data/split/split.json)")
        assert await shown_after("held", "3") == (f"held-out data/split/test.jsonl, {n} records (the first 3 "
                                                  "evaluated) (test side of data/split/split.json)")
        text = await shown_after("own")
        assert text.startswith("error: run own has no held-out file: no data.eval, and no split manifest "
                               "(split.json) beside data/self_cognition.jsonl; give a file in the data field"), text
        assert screen.folder is None and not screen.running
