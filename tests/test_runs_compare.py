"""``tuitune runs compare A B``: the settings that differ and the final figures of two runs written by
hand (config.yaml, state.json, events.jsonl), and a preference run's figures in ``runs follow``."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, run_cli
from test_train_screen import CREATED, RUN_ID, live_state, make_run, recorded_lines
from train_helpers import write_config

from tuitune.commands.runs import format_event
from tuitune.errors import TuituneError
from tuitune.train.compare import compare_runs, figure_rows

DPO_ID = "20261201-090000-dpo"
OTHER_ID = "20261123-160000-lower-lr"


def slower_lines(scale: float = 1.6, offset: float = 0.4) -> list[str]:
    """The recorded run's events with a slower-falling train loss (a run at a lower learning rate)."""
    out = []
    for line in recorded_lines():
        e = json.loads(line)
        if e["type"] == "train":
            e["loss"] = e["loss"] * scale + offset
            line = json.dumps(e, ensure_ascii=False)
        out.append(line)
    return out


def make_other_run(ws) -> None:
    make_run(ws, OTHER_ID, lines=slower_lines(), created=CREATED - 3600, last_loss=0.5164)


def preference_lines() -> list[str]:
    """A DPO run's events as the callback writes them: reward figures beside the loss."""
    lines = [{"time": 1795453661.0, "type": "lifecycle", "event": "train_begin", "step": 0, "total_steps": 40}]
    for i, step in enumerate((10, 20, 30, 40)):
        lines.append({"time": 1795453670.0 + i, "type": "train", "step": step, "total_steps": 40, "epoch": step / 40,
                      "loss": 0.69 - 0.1 * i, "lr": 5e-6, "grad_norm": 1.0, "tokens": 1000 * step,
                      "tokens_per_s": 250.0, "elapsed": 10.0 * step, "eta": 10.0 * (40 - step),
                      "reward_margin": 0.1 + 0.2 * i, "reward_accuracy": 0.5 + 0.125 * i,
                      "reward_chosen": -0.5, "reward_rejected": -0.6 - 0.2 * i})
    lines.append({"time": 1795453680.0, "type": "eval", "step": 40, "epoch": 1.0, "eval_loss": 0.45,
                  "eval_reward_margin": 0.55, "eval_reward_accuracy": 0.8125})
    return [json.dumps(e) for e in lines]


def make_preference_run(ws, run_id: str = DPO_ID) -> None:
    make_run(ws, run_id, lines=preference_lines(), step=40, total_steps=40, last_loss=0.39, log="=== start\n")


def freeze_config(ws, run_id: str, **changes) -> None:
    """The run's frozen config.yaml: the tiny-demo preset with ``changes`` ({"training.lr": 1e-3})."""
    write_config(ws, run_id, **changes).replace(ws / "runs" / run_id / "config.yaml")


@pytest.fixture
def two_runs(workspace):
    make_run(workspace)
    make_other_run(workspace)
    freeze_config(workspace, RUN_ID)
    freeze_config(workspace, OTHER_ID, **{"training.lr": 0.001, "lora.r": 8})
    return workspace


def test_the_settings_that_differ_and_the_final_figures(two_runs):
    result = compare_runs(two_runs, RUN_ID, "lower-lr")  # a unique part of an id will do
    assert (result["a"], result["b"]) == (RUN_ID, OTHER_ID)
    assert result["settings"] == [{"field": "lora.r", "a": 16, "b": 8},
                                  {"field": "training.lr", "a": 0.005, "b": 0.001}]
    a, b = result["figures"]["a"], result["figures"]["b"]
    assert (a["status"], a["step"], a["total_steps"]) == ("finished", 100, 100)
    assert a["loss"] == pytest.approx(0.072762, abs=1e-6)
    assert (a["best_loss"], a["best_loss_step"]) == (pytest.approx(0.0722, abs=1e-4), 90)
    assert b["loss"] == pytest.approx(0.072762 * 1.6 + 0.4, abs=1e-6)
    # An ended run's tokens/s is the whole run's (57,120 tokens in 217 s), not its last window's (#20 item 9).
    assert a["tokens_per_s"] == pytest.approx(57120 / 217.01) and a["elapsed"] == 217.01
    assert (a["tokens"], a["tokens_per_s_recent"]) == (57120, 379.7)
    assert a["eval_loss"] is None and a["rewards"] == {} and b["rewards"] == {}
    rows = {name: (x, y) for name, x, y in figure_rows(result)}
    assert rows["steps"] == ("100/100", "100/100") and rows["elapsed"] == ("3m37s", "3m37s")
    assert rows["tokens/s"] == ("263", "263")
    assert rows["loss (best)"] == ("0.0722 @ 90", "0.5155 @ 90")
    assert not [name for name in rows if "reward" in name]  # no preference run here


def test_a_live_run_compares_at_its_recent_rate(two_runs):
    (two_runs / "runs" / OTHER_ID / "state.json").write_text(json.dumps({**json.loads(
        (two_runs / "runs" / OTHER_ID / "state.json").read_text()), **live_state()}))
    result = compare_runs(two_runs, RUN_ID, OTHER_ID)
    assert result["figures"]["b"]["tokens_per_s"] == 379.7
    assert {name: (x, y) for name, x, y in figure_rows(result)}["tokens/s"] == ("263", "380 (recent)")


def test_follow_ends_with_the_whole_runs_rate(two_runs):
    proc = run_cli("-w", two_runs, "runs", "follow", RUN_ID)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    last_step = next(line for line in reversed(lines) if line.startswith("step 100/100  loss"))
    assert "380 tok/s" in last_step  # each step line: its window's rate
    assert lines[-1] == "57,120 tokens in 3m37s: 263 tok/s over the whole run"
    assert proc.stderr.strip() == f"run {RUN_ID} finished"
    follow = run_cli("-w", two_runs, "runs", "follow", RUN_ID, "--json")
    assert all(json.loads(line) for line in follow.stdout.splitlines())  # JSON lines only


def test_a_preference_run_has_its_rewards_and_best_eval(two_runs):
    make_preference_run(two_runs, DPO_ID)
    freeze_config(two_runs, DPO_ID, task="dpo")
    result = compare_runs(two_runs, RUN_ID, DPO_ID)
    assert {"field": "task", "a": "sft", "b": "dpo"} in result["settings"]
    b = result["figures"]["b"]
    assert (b["eval_loss"], b["best_eval_loss"], b["best_eval_step"]) == (0.45, 0.45, 40)
    assert b["rewards"]["reward_margin"] == pytest.approx(0.7)
    assert b["rewards"]["eval_reward_accuracy"] == 0.8125
    rows = {name: (x, y) for name, x, y in figure_rows(result)}
    assert rows["reward margin"] == ("-", "0.7000") and rows["reward acc"] == ("-", "87.5%")
    assert rows["eval reward acc"] == ("-", "81.2%") and rows["eval loss (best)"] == ("-", "0.4500 @ 40")


def test_a_run_without_its_config_still_has_its_figures(two_runs):
    (two_runs / "runs" / OTHER_ID / "config.yaml").unlink()
    result = compare_runs(two_runs, RUN_ID, OTHER_ID)
    assert result["settings"] is None and "has no config.yaml" in result["settings_note"]
    assert result["figures"]["b"]["step"] == 100
    with pytest.raises(TuituneError, match="no run 'nope'"):
        compare_runs(two_runs, RUN_ID, "nope")


def test_cli_table_json_and_an_unknown_run(two_runs):
    proc = run_cli("-w", two_runs, "runs", "compare", RUN_ID, OTHER_ID, env={"COLUMNS": "120"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "settings that differ" in out and "figures" in out
    lr = next(l for l in out.splitlines() if "training.lr" in l)
    assert "0.005" in lr and "0.001" in lr
    assert "lora.r" in out and "training.epochs" not in out  # only what differs
    best = next(l for l in out.splitlines() if "loss (best)" in l).split("│")[2:4]
    assert [c.strip() for c in best] == ["0.0722 @ 90", "0.5155 @ 90"]
    proc = run_cli("-w", two_runs, "runs", "compare", RUN_ID, OTHER_ID, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(json.dumps(compare_runs(two_runs, RUN_ID, OTHER_ID)))
    proc = run_cli("-w", two_runs, "runs", "compare", RUN_ID, "no-such-run")
    line = assert_one_line_error(proc, "no-such-run", RUN_ID, OTHER_ID)
    assert line.startswith("error: no run 'no-such-run'")


def test_follow_prints_a_preference_runs_rewards():
    events = [json.loads(line) for line in preference_lines()]
    train = format_event(events[-2])
    assert train.startswith("step 40/40  loss 0.3900  margin 0.7000  acc 87.5%  lr 5.00e-06")
    assert format_event(events[-1]) == "step 40  eval loss 0.4500  eval margin 0.5500  eval acc 81.2%"
    # An SFT run's lines are as they were.
    assert format_event({"type": "train", "step": 5, "total_steps": 10, "loss": 1.5, "lr": 1e-4}) == \
        "step 5/10  loss 1.5000  lr 1.00e-04"
    assert format_event({"type": "eval", "step": 5, "eval_loss": 1.25}) == "step 5  eval loss 1.2500"
