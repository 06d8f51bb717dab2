"""tuitune eval --bench: lm-evaluation-harness on a run and its base, through the console script as a user
types it, from inside a workspace with relative paths (the tiny model; the real model's learning outcome
is in tests/test_real_model_bench.py)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, assert_one_line_error, run_cli
from train_helpers import make_workspace, write_config

RUN = "gb"
LIMIT = 20


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_model) -> Path:
    """The tiny model, the shipped local task copied to data/bench/ (as the demo does), a 2-step LoRA run."""
    ws = make_workspace(tmp_path_factory.mktemp("bench") / "ws", tiny_model)
    shutil.copytree(ROOT / "sample_data" / "bench", ws / "data" / "bench")
    cfg = write_config(ws, RUN, **{"training.max_steps": 2, "training.lr": 0.02, "evaluation.prompts": []})
    proc = run_cli("train", cfg.relative_to(ws), "--foreground", "--name", RUN, cwd=ws, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return ws


def _bench(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())["bench"]


def test_the_local_task_scores_the_run_and_its_base(ws):
    """A relative task file, read from inside the workspace: its data is found beside the YAML; the base
    side is the bare base model (the same score as the model folder alone), the change and the verdict
    follow the rule, and the report, report.md and the summary line carry the section."""
    proc = run_cli("eval", RUN, "--bench", "data/bench/common.yaml", "--limit", LIMIT, "-o", "evals/gb", cwd=ws,
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data: none, general ability only" in proc.stderr   # the run has no held-out file: bench alone
    bench = _bench(ws / "evals" / "gb")
    (row,) = bench["tasks"]
    assert row["task"] == "common" and row["source"] == "data/bench/common.yaml" and row["n"] == LIMIT
    assert bench["limit"] == LIMIT and bench["chat_template"] is False
    b, t = row["baseline"], row["target"]
    for side in (b, t):   # lm-eval's mean stderr: the sample standard deviation over sqrt(n)
        assert side["stderr"] == pytest.approx(math.sqrt(side["score"] * (1 - side["score"]) / (LIMIT - 1)))
    assert row["change"] == pytest.approx(t["score"] - b["score"])
    assert row["verdict"] == ("worse" if b["score"] - t["score"] > 2 * b["stderr"] else "kept")
    line = f"general ability: common {row['metric']} {b['score']:.2f} → {t['score']:.2f} ({row['verdict']})"
    assert proc.stdout.splitlines()[0] == line
    md = (ws / "evals" / "gb" / "report.md").read_text()
    assert "## General ability" in md and "no held-out data" in md
    assert (f"| common | {row['metric']} | {LIMIT} | {b['score']:.3f} ± {b['stderr']:.3f} | "
            f"{t['score']:.3f} ± {t['stderr']:.3f} | {row['change']:+.3f} | {row['verdict']} |") in md
    # The base side is the base: the adapter switched off on the shared copy scores as the bare model does.
    proc = run_cli("eval", "models/tiny-chat", "--bench", "common", "--limit", LIMIT, "-o", "evals/bare", cwd=ws,
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (bare,) = _bench(ws / "evals" / "bare")["tasks"]
    assert bare["target"]["score"] == pytest.approx(b["score"]) and "verdict" not in bare


def test_beside_the_held_out_results(ws):
    """With held-out data the report has both sections, and the summary line says both."""
    data = ws / "data" / "held.jsonl"
    data.write_text("".join(ws.joinpath("data", "self_cognition.jsonl").read_text().splitlines(True)[:3]))
    proc = run_cli("eval", RUN, "--data", "data/held.jsonl", "--max-new-tokens", "4", "--bench", "common",
                   "--limit", "8", "-o", "evals/both", cwd=ws, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((ws / "evals" / "both" / "report.json").read_text())
    assert rep["records"] == 3 and rep["summary"]["target"]["loss"] is not None
    assert rep["bench"]["tasks"][0]["n"] == 8
    first = proc.stdout.splitlines()[0]
    assert first.startswith("held-out loss ") and "; general ability: common " in first
    md = (ws / "evals" / "both" / "report.md").read_text()
    assert md.index("| held-out loss |") < md.index("## General ability") < md.index("## Records")


@pytest.mark.parametrize("args, needles", [
    (["--bench", "common", "--limit", "0"], ["--limit 0", "1 or more"]),
    (["--bench", "comon"], ["--bench comon", "closest: common"]),
    (["--bench", "data/broken.yaml"], ["data/broken.yaml", "line 3", "not a task file"]),
    (["--bench", "data/nodata.yaml"], ["data/nodata.yaml", "missing.jsonl", "not there"]),
    (["--bench", "arc_easy"], ["--bench arc_easy", "cannot be fetched", "allenai/ai2_arc", "dataset_path: json"]),
    (["--limit", "5"], ["--limit", "--bench"]),
])
def test_bad_input_is_one_line_and_leaves_no_report(ws, args, needles):
    (ws / "data" / "broken.yaml").write_text("task: broken\ndataset_path: json\n  test: [\n")
    (ws / "data" / "nodata.yaml").write_text("task: nodata\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                                             "    test: missing.jsonl\noutput_type: multiple_choice\n")
    # arc_easy's data is on the Hub: offline (conftest's HF_*_OFFLINE) it cannot be fetched
    proc = run_cli("eval", RUN, *args, "-o", "evals/bad", cwd=ws, timeout=600)
    assert_one_line_error(proc, *needles)
    assert not (ws / "evals" / "bad").exists()


def test_the_evaluate_screen_card_shows_general_ability(ws):
    """The Evaluate screen's summary card (screens/widgets/eval/view.py) reads the report's bench section:
    each task's score ± standard error, base → tuned, and its verdict."""
    from screens.widgets.eval.view import summary_card

    folder = ws / "evals" / "card"
    proc = run_cli("eval", RUN, "--bench", "common", "--limit", "8", "-o", folder.relative_to(ws), cwd=ws,
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((folder / "report.json").read_text())
    (row,) = rep["bench"]["tasks"]
    b, t = row["baseline"], row["target"]
    text = summary_card(rep).plain
    assert "no held-out data" in text
    assert (f"general ability  common {row['metric']} {b['score']:.2f} ± {b['stderr']:.2f} → "
            f"{t['score']:.2f} ± {t['stderr']:.2f}  {row['verdict']}") in text


async def test_the_evaluate_screen_runs_general_ability(ws):
    """On Evaluate, general: common and r: the run without a held-out file is scored on the local set, base
    against tuned, and the report's card says it."""
    from screens.app import TuituneApp
    from tuitune.doctor import Report

    from conftest import widget_text

    app = TuituneApp(ws, start="eval", doctor=lambda w: Report())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        screen.query_one("#eval-target").value = RUN
        screen.query_one("#eval-bench").value = "common"
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.folder is not None, str(screen.query_one("#eval-status").render())
        (row,) = json.loads((screen.folder / "report.json").read_text())["bench"]["tasks"]
        assert row["n"] == 60 and row["verdict"] in ("kept", "worse")
        summary = widget_text(screen.query_one("#eval-summary"), 120)
        assert f"general ability  common {row['metric']} {row['baseline']['score']:.2f} ± " in summary
        assert f"  {row['verdict']}" in summary
