"""Evaluate on a GRPO run (#24 section 3): held-out prompt records, the tuned model against its base,
scored by the run's own rewards; through the console script from inside the workspace, the Evaluate
screen, and snapshots of a GRPO report."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import assert_one_line_error

PROMPTS = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(16)]
#: Held-out records given with --data: one without an answer (not counted in the exact pass rate).
MORE = [{"prompt": "What is 30 + 30?", "answer": "60"}, {"prompt": "Say a number."},
        {"prompt": "What is 41 + 1?", "answer": "42", "system": "Answer with #### N."}]
#: The user's own reward: the completion's length in tokens (TRL's completion_ids), none without an answer.
TOKENS_PY = ("def tokens(completions, completion_ids, answer, **kwargs):\n"
             "    return [float(len(ids)) if a else None for ids, a in zip(completion_ids, answer)]\n")
CONFIG = """\
model: models/tiny-chat
task: grpo
method: lora
data: {train: data/split/train.jsonl, max_length: 128, pack: false}
lora: {r: 8, alpha: 16, dropout: 0.0}
training: {max_steps: 2, batch_size: 4, grad_accum: 1, lr: 0.05, gradient_checkpointing: false,
           precision: fp32, save_steps: 2, save_total_limit: null, logging_steps: 1}
grpo:
  num_generations: 2
  max_completion_length: 6
  rewards:
    - exact
    - "regex pattern='#### ?-?[0-9]+' weight=0.5"
    - {name: length, target_length: 4, weight: 0.1}
    - tokens.py:tokens weight=0.01
evaluation: {prompts: [], eval_loss: false}
"""
WEIGHTS = {"exact": 1.0, "regex": 0.5, "length": 0.1, "tokens": 0.01}


def tuitune(*args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """The console script, as a user types it in the workspace."""
    return subprocess.run(["tuitune", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _jsonl(path: Path, items: list) -> None:
    path.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A demo workspace, its prompts split, and a 2-step GRPO run "g" on the train side."""
    root = tmp_path_factory.mktemp("grpo-eval")
    assert tuitune("demo", "ws", "--no-open", cwd=root).returncode == 0
    ws = root / "ws"
    _jsonl(ws / "data" / "prompts.jsonl", PROMPTS)
    _jsonl(ws / "data" / "more.jsonl", MORE)
    (ws / "tokens.py").write_text(TOKENS_PY, encoding="utf-8")
    proc = tuitune("data", "split", "data/prompts.jsonl", "-o", "data/split", "--test-ratio", "0.25", cwd=ws)
    assert proc.returncode == 0, proc.stderr
    (ws / "configs" / "g.yaml").write_text(CONFIG, encoding="utf-8")
    proc = tuitune("train", "configs/g.yaml", "--foreground", "--name", "g", cwd=ws)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return ws


@pytest.fixture(scope="module")
def report(ws):
    proc = tuitune("eval", "g", "--max-new-tokens", "6", cwd=ws)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = ws / re.search(r"^report: (\S+)/report\.md$", proc.stdout, re.M).group(1)
    rep = json.loads((folder / "report.json").read_text())
    records = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
    return folder, rep, records, proc


def _direct(answer: dict, reference: str) -> dict:
    """The run's rewards computed straight from the built-in functions and the user's file."""
    from tuitune.train.rewards import exact, length, regex

    tokens = float(answer["new_tokens"]) if reference else None
    return {"exact": exact(answer["answer"], answer=reference),
            "regex": regex(answer["answer"], pattern="#### ?-?[0-9]+"),
            "length": length(answer["answer"], target_length=4, tokens=answer["new_tokens"]), "tokens": tokens}


def _check_scores(rep: dict, records: list[dict]) -> None:
    """Every record's rewards, its weighted reward, change and verdict; the summary's means and rates."""
    from tuitune.eval.report import verdict

    for r in records:
        for side in ("baseline", "target"):
            got = r[side]
            want = _direct(got, r["reference"])
            assert got["rewards"] == pytest.approx(want), (r["prompt"], side)
            assert got["reward"] == pytest.approx(sum(WEIGHTS[k] * v for k, v in want.items() if v is not None))
            assert got["exact_pass"] == (bool(want["exact"]) if r["reference"] else None)
            assert got["format_ok"] == (want["regex"] == 1.0)
        assert r["change"] == pytest.approx(r["target"]["reward"] - r["baseline"]["reward"])
        assert r["verdict"] == verdict(r["change"])
    s = rep["summary"]
    for side in ("baseline", "target"):
        rows = [r[side] for r in records]
        answered = [x["exact_pass"] for x in rows if x["exact_pass"] is not None]
        for k in WEIGHTS:
            vals = [x["rewards"][k] for x in rows if x["rewards"][k] is not None]
            assert s[side][f"reward_{k}"] == pytest.approx(sum(vals) / len(vals))
        assert s[side]["reward"] == pytest.approx(sum(x["reward"] for x in rows) / len(rows))
        assert s[side]["with_answer"] == len(answered)
        assert s[side]["exact_rate"] == pytest.approx(sum(answered) / len(answered))
        assert s[side]["format_rate"] == pytest.approx(sum(x["format_ok"] for x in rows) / len(rows))
        assert s[side]["answer_tokens"] == pytest.approx(sum(x["new_tokens"] for x in rows) / len(rows))
    assert s["better"] + s["worse"] + s["same"] == len(records)
    assert s["better"] == sum(r["verdict"] == "better" for r in records)


def test_a_grpo_run_is_scored_by_its_rewards_on_the_test_side_of_its_split(ws, report):
    folder, rep, records, proc = report
    # Which file and why, before anything loads: the test side of the split the run trained on.
    test_side = [json.loads(line) for line in (ws / "data" / "split" / "test.jsonl").read_text().splitlines()]
    assert proc.stderr.startswith(f"data: data/split/test.jsonl, {len(test_side)} records (test side of the split")
    assert rep["task"] == "grpo" and rep["records"] == len(test_side) and rep["settings"]["temperature"] == 0
    assert rep["summary"]["data"]["origin"] == "split"
    assert [r["label"] for r in rep["rewards"]] == list(WEIGHTS) and [r["weight"] for r in rep["rewards"]] == list(
        WEIGHTS.values())
    assert [r["prompt"] for r in records] == [t["prompt"] for t in test_side]
    assert [r["reference"] for r in records] == [t["answer"] for t in test_side]
    _check_scores(rep, records)
    # The CLI's line and report.md say the reward figures, and list the records by their reward's change.
    t, b = rep["summary"]["target"], rep["summary"]["baseline"]
    assert proc.stdout.splitlines()[0] == (
        f"reward {b['reward']:.2f} → {t['reward']:.2f}, exact {b['exact_rate']:.0%} → {t['exact_rate']:.0%}, "
        f"format {b['format_rate']:.0%} → {t['format_rate']:.0%}, answer tokens {b['answer_tokens']:.1f} → "
        f"{t['answer_tokens']:.1f}, better on {rep['summary']['better']} of {rep['records']}")
    md = (folder / "report.md").read_text()
    for row in ("| reward, weighted sum (mean) |", "| reward `tokens` (mean, weight 0.01) |",
                f"| exact pass rate ({len(test_side)} with an answer) |", "| format rate (regex all matched) |",
                "| answer tokens (mean) |", "`tokens.py:tokens weight=0.01`"):
        assert row in md, row
    heads = re.findall(r"^### (\d+)\. (better|worse|same) \(reward ([-+]\d\.\d\d)\)$", md, re.M)
    assert len(heads) == len(records)
    changes = [abs(float(c)) for _n, _v, c in heads]
    assert changes == sorted(changes, reverse=True)
    assert {(int(n) - 1, v) for n, v, _c in heads} == {(r["index"], r["verdict"]) for r in records}


def test_the_answers_are_the_chat_answers(ws, report):
    """Evaluate generates through the one generation path: greedy, as `tuitune chat` answers."""
    _folder, _rep, records, _proc = report
    for spec, side in (("g", "target"), ("g:base", "baseline")):
        proc = tuitune("chat", spec, "--prompt", records[0]["prompt"], "--temperature", "0", "--max-new-tokens",
                       "6", cwd=ws)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout[:-1] == records[0][side]["answer"], spec


def test_a_file_given_with_data_and_records_without_an_answer(ws):
    out = ws / "evals" / "more"
    proc = tuitune("eval", "g", "--data", "data/more.jsonl", "--max-new-tokens", "6", "-o", "evals/more", cwd=ws)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.startswith("data: data/more.jsonl, 3 records\n")
    rep = json.loads((out / "report.json").read_text())
    records = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert rep["summary"]["data"]["origin"] == "given" and rep["summary"]["target"]["with_answer"] == 2
    assert records[1]["reference"] == "" and records[1]["target"]["rewards"]["tokens"] is None
    assert records[1]["target"]["exact_pass"] is None
    _check_scores(rep, records)


def test_bad_input_is_one_line_and_writes_nothing(ws, tmp_path):
    before = sorted(p.name for p in (ws / "evals").iterdir()) if (ws / "evals").exists() else []
    assert_one_line_error(tuitune("eval", "g", "--checkpoints", cwd=ws), "--checkpoints", "RUN:checkpoint-N")
    assert_one_line_error(tuitune("eval", "models/tiny-chat", "--data", "data/more.jsonl", cwd=ws),
                          "prompt records are scored with a GRPO run's rewards", "is not a run")
    assert_one_line_error(tuitune("eval", "g", "--data", "data/self_cognition.jsonl", cwd=ws),
                          "self_cognition.jsonl", "line 1", "prompt records")
    after = sorted(p.name for p in (ws / "evals").iterdir()) if (ws / "evals").exists() else []
    assert after == before
    # The user's reward file changed since the run and now fails on a record: the function, the record, why.
    other = tmp_path / "ws"
    shutil.copytree(ws, other, ignore=shutil.ignore_patterns("evals"))
    (other / "tokens.py").write_text("def tokens(completions, answer, **kwargs):\n"
                                     "    return [1 / (int(a) - 60) for a in answer]\n")
    proc = tuitune("eval", "g", "--data", "data/more.jsonl", "--max-new-tokens", "2", cwd=other)
    assert_one_line_error(proc, "reward tokens.py:tokens failed on more.jsonl line 1", "ZeroDivisionError")
    assert not (other / "evals").exists() or not any((other / "evals").iterdir())


async def test_the_evaluate_screen_shows_the_rewards(ws):
    """Key r on Evaluate evaluates the GRPO run: the summary has each reward, the table the reward's
    change, the detail pane each answer's rewards."""
    from screens.app import TuituneApp
    from tuitune.doctor import Report

    from conftest import widget_text

    app = TuituneApp(ws, start="eval", doctor=lambda w: Report())
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        screen.query_one("#eval-target").value = "g"
        screen.query_one("#eval-samples").value = "3"
        screen.query_one("#eval-tokens").value = "6"
        await pilot.press("r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.folder is not None, str(screen.query_one("#eval-status").render())
        rep = json.loads((screen.folder / "report.json").read_text())
        t, b = rep["summary"]["target"], rep["summary"]["baseline"]
        summary = widget_text(screen.query_one("#eval-summary"), 120)
        assert f"reward {b['reward']:.2f} → {t['reward']:.2f}" in summary
        assert f"rewards  exact {b['reward_exact']:.2f} → {t['reward_exact']:.2f}" in summary
        assert f"tokens {b['reward_tokens']:.2f} → {t['reward_tokens']:.2f}" in summary
        table = screen.query_one("#eval-records")
        assert table.row_count == 3 and [str(c.label) for c in table.ordered_columns][1] == "Δreward"
        view = screen.query_one("#eval-report")
        rec = view.records[view.current()]
        detail = widget_text(screen.query_one("#eval-detail"), 120)
        assert f"target  reward {rec['target']['reward']:.2f} · exact" in detail
        assert f"regex {rec['target']['rewards']['regex']:g}" in detail and rec["reference"] in detail


# --- snapshots of a GRPO report: rewards in the summary, the table by the reward's change -------------

#: (prompt, answer, base's completion, tuned completion)
FIXED = [("What is 12 + 12?", "24", "It is 24.", "12 + 12 = 24\n#### 24"),
         ("What is 7 + 7?", "14", "7 and 7", "#### 14"),
         ("What is 30 + 30?", "60", "#### 60", "the sum is sixty"),
         ("Name a colour.", "", "Blue.", "Blue.")]


def fixed_grpo_report(ws: Path, tokenizer_dir: Path) -> Path:
    """A GRPO report written by hand from fixed completions, scored by the engine's RewardSet."""
    from transformers import AutoTokenizer

    from tuitune.config.schema_grpo import GrpoConfig
    from tuitune.eval.prompt_scores import RewardSet
    from tuitune.eval.report import verdict, write_report
    from tuitune.generation import BatchAnswer

    specs = GrpoConfig.model_validate({"rewards": ["exact", "regex pattern='#### ?-?[0-9]+' weight=0.5",
                                                   "length target_length=8 weight=0.1"]}).rewards
    rs = RewardSet.of_specs(specs, ws)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    convs = [[{"role": "user", "content": p}] for p, *_ in FIXED]
    refs = [a for _p, a, *_ in FIXED]
    sides = {}
    for side, col in (("baseline", 2), ("target", 3)):
        answers = [BatchAnswer(row[col], len(row[col].split()), "eos", list(range(len(row[col].split()))))
                   for row in FIXED]
        scores = rs.score(tok, "auto", convs, answers, refs, [f"test.jsonl line {i + 1}" for i in range(len(FIXED))])
        sides[side] = (answers, scores, rs.summary(answers, scores))
    records = []
    for i, (prompt, ref, *_r) in enumerate(FIXED):
        rec = {"index": i, "prompt": prompt, "reference": ref, "mark": None}
        for side, (answers, scores, _s) in sides.items():
            a = answers[i]
            rec[side] = {"answer": a.text, "new_tokens": a.new_tokens, "finish": a.finish, **scores[i]}
        rec["change"] = rec["target"]["reward"] - rec["baseline"]["reward"]
        rec["verdict"] = verdict(rec["change"])
        records.append(rec)
    ident = {"label": "g", "spec": "g", "base": str(ws / "models" / "tiny-chat"),
             "adapter": str(ws / "runs" / "g" / "adapter"), "run": "g", "checkpoint": None}
    report = {"version": 1, "created": 1_764_600_000.0, "target": ident,
              "baseline": {**ident, "label": "g:base", "spec": "g:base", "adapter": None},
              "data": "data/split/test.jsonl", "records": len(records), "generated": True, "pairs": False,
              "task": "grpo", "rewards": rs.as_dicts(),
              "settings": {"temperature": 0.0, "seed": 0, "max_new_tokens": 128, "template": "auto"},
              "summary": {"data": {"file": "data/split/test.jsonl", "records": 4, "evaluated": 4, "origin": "split",
                                   "note": "test side of the split of data/prompts.jsonl in data/split/split.json; "
                                   "the run trained on its train side"},
                          **{side: s for side, (_a, _sc, s) in sides.items()}},
              "checkpoints": [], "seconds": 3.0}
    folder = ws / "evals" / "g-20261201-120000"
    folder.mkdir(parents=True)
    write_report(folder, report, records)
    return folder


def _opened(folder: Path, down: int = 0):
    async def run_before(pilot):
        await pilot.pause()
        pilot.app.screen.query_one("#eval-reports").value = str(folder)
        await pilot.pause()
        for _ in range(down):
            await pilot.press("down")
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()
    return run_before


def _app(ws: Path):
    from screens.app import TuituneApp
    from tuitune.doctor import Report

    return TuituneApp(ws, start="eval", doctor=lambda w: Report())


def test_the_fixed_report_scores_as_the_rewards_say(fixed_workspace, tiny_model):
    """What the snapshots show: right and formatted answers gain, a lost format loses, the same is the same."""
    folder = fixed_grpo_report(fixed_workspace, tiny_model)
    records = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
    assert [r["verdict"] for r in records] == ["better", "better", "worse", "same"]
    assert records[0]["target"]["rewards"] == {"exact": 1.0, "regex": 1.0, "length": 0.0}
    assert records[3]["target"]["exact_pass"] is None


def test_a_grpo_report_80x24(snap_compare, fixed_workspace, tiny_model):
    folder = fixed_grpo_report(fixed_workspace, tiny_model)
    assert snap_compare(_app(fixed_workspace), terminal_size=(80, 24), run_before=_opened(folder))


def test_a_grpo_report_120x36(snap_compare, fixed_workspace, tiny_model):
    folder = fixed_grpo_report(fixed_workspace, tiny_model)
    assert snap_compare(_app(fixed_workspace), terminal_size=(120, 36), run_before=_opened(folder, down=1))
