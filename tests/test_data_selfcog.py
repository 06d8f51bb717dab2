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
    from collections import Counter

    top = [q for q, _ in Counter(qs).most_common(2)]
    assert sorted(top) == sorted(TUTORIAL_QUESTIONS)  # the tutorial's two are asked most often
    assert qs.count(TUTORIAL_QUESTIONS[0]) >= 20
    assert any(q.isascii() for q in qs) and len(set(qs)) >= 15
    intro = [r["conversation"][0]["output"] for r in recs if r["conversation"][0]["input"] == "请介绍一下你自己"]
    assert all(a.startswith("我是小明的小助手，") for a in intro)  # one opening to learn for the demo's question


def test_count_means_distinct_records():
    """150 asked, 150 different records (Convert's dedupe finds none); past the phrasings: say so."""
    from tuitune.data.selfcog import MAX_RECORDS

    for n in (150, MAX_RECORDS):
        recs = generate("周岚", n, seed=5)
        assert len(recs) == n
        assert len({(r["conversation"][0]["input"], r["conversation"][0]["output"]) for r in recs}) == n
    import pytest

    from tuitune.errors import TuituneError

    with pytest.raises(TuituneError, match=f"only {MAX_RECORDS} distinct records"):
        generate("周岚", MAX_RECORDS + 1)


def test_english_answers_are_grammatical():
    """No "My name is 周岚's assistant": every English answer is one of a few checked sentences."""
    from tuitune.data.selfcog import EN_ANSWERS

    answers = {r["conversation"][0]["output"] for r in generate("周岚", 286, seed=1)
               if r["conversation"][0]["input"].isascii()}
    assert answers and not any(a.startswith("My name is") for a in answers)
    assert answers <= {a.format(name="周岚") for a in EN_ANSWERS}
    for a in EN_ANSWERS:
        assert "My name is {name}'s" not in a and a[0].isupper() and a.rstrip()[-1] in ".?!"


def test_too_many_is_a_one_line_error(tmp_path):
    assert_one_line_error(run_cli("data", "self-cognition", "--name", "Ada", "--count", "100000",
                                  "-o", tmp_path / "x.jsonl"), "distinct records")
    assert not (tmp_path / "x.jsonl").exists()


def test_seeded():
    assert generate("Bob", 50, seed=1) == generate("Bob", 50, seed=1)
    assert generate("Bob", 50, seed=1) != generate("Bob", 50, seed=2)


def test_shipped_sample_is_this_generator_with_alice_seed_0():
    recs = load_records(ROOT / "sample_data/self_cognition.jsonl")
    assert recs == generate("Alice", 150, seed=0)


def test_empty_name_is_an_error(tmp_path):
    assert_one_line_error(run_cli("data", "self-cognition", "--name", " ", "-o", tmp_path / "x.jsonl"), "--name")
    assert not (tmp_path / "x.jsonl").exists()
