"""tuitune data self-cognition: the name in every answer, the tutorial's questions, seeded."""

from __future__ import annotations

from tests.conftest import ROOT, assert_one_line_error, run_cli
from tuitune.data import load_records
from tuitune.data.selfcog import TUTORIAL_QUESTIONS, generate


def test_generates_zh_and_en_with_the_name_and_tutorial_questions(tmp_path):
    out = tmp_path / "sc.jsonl"
    proc = run_cli("data", "self-cognition", "--name", "小明", "--count", "120", "--seed", "3", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "120" in proc.stdout
    recs = load_records(out)
    assert len(recs) == 120
    qs = [r["conversation"][0]["input"] for r in recs]
    assert all("小明" in r["conversation"][0]["output"] for r in recs)
    for q in TUTORIAL_QUESTIONS:
        assert qs.count(q) >= 20
    assert any(q.isascii() for q in qs) and len(set(qs)) >= 15
    intro = [r["conversation"][0]["output"] for r in recs if r["conversation"][0]["input"] == "请介绍一下你自己"]
    assert len(set(intro)) == 1  # one answer to learn for the demo's question


def test_seeded():
    assert generate("Bob", 50, seed=1) == generate("Bob", 50, seed=1)
    assert generate("Bob", 50, seed=1) != generate("Bob", 50, seed=2)


def test_shipped_sample_is_this_generator_with_alice_seed_0():
    recs = load_records(ROOT / "sample_data/self_cognition.jsonl")
    assert recs == generate("Alice", 150, seed=0)


def test_empty_name_is_an_error(tmp_path):
    assert_one_line_error(run_cli("data", "self-cognition", "--name", " ", "-o", tmp_path / "x.jsonl"), "--name")
    assert not (tmp_path / "x.jsonl").exists()
