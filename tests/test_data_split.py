"""tuitune data split: seeded, reproducible, and leak-free with --group-by input."""

from __future__ import annotations

import json

from tests.conftest import ROOT, assert_one_line_error, run_cli
from tuitune.data import convert, load_records, split_records
from tuitune.data.split import group_key


def _records(n_questions=40, per_q=3):
    return [{"conversation": [{"input": f"question {q}", "output": f"answer {q}.{k}"}]}
            for q in range(n_questions) for k in range(per_q)]


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    src = tmp_path / "all.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    for d in ("a", "b", "c"):
        proc = run_cli("data", "split", src, "-o", tmp_path / d, "--seed", "7" if d != "c" else "8")
        assert proc.returncode == 0, proc.stderr
        assert "train: 84 records" in proc.stdout and "test:  36 records" in proc.stdout
    assert (tmp_path / "a/train.jsonl").read_bytes() == (tmp_path / "b/train.jsonl").read_bytes()
    assert (tmp_path / "a/test.jsonl").read_bytes() == (tmp_path / "b/test.jsonl").read_bytes()
    assert (tmp_path / "a/test.jsonl").read_bytes() != (tmp_path / "c/test.jsonl").read_bytes()
    # Nothing lost, nothing doubled.
    both = load_records(tmp_path / "a/train.jsonl") + load_records(tmp_path / "a/test.jsonl")
    assert sorted(map(json.dumps, both)) == sorted(map(json.dumps, _records()))


def test_ungrouped_split_leaks_questions_and_grouped_split_does_not():
    recs = _records()
    train, test = split_records(recs, 0.3, seed=1)
    assert {group_key(r) for r in train} & {group_key(r) for r in test}  # the leak exists without grouping
    train, test = split_records(recs, 0.3, seed=1, group_by="input")
    assert not {group_key(r) for r in train} & {group_key(r) for r in test}
    assert len(test) == 36 and len(train) == 84


def test_group_by_input_treats_nbsp_and_spacing_as_the_same_question(tmp_path):
    out = tmp_path / "m.jsonl"
    convert(ROOT / "sample_data/medqa_sample.xlsx", out, preset="medqa")
    proc = run_cli("data", "split", out, "-o", tmp_path / "s", "--group-by", "input", "--test-ratio", "0.3")
    assert proc.returncode == 0, proc.stderr
    train = load_records(tmp_path / "s/train.jsonl")
    test = load_records(tmp_path / "s/test.jsonl")
    assert len(train) + len(test) == 41
    assert not {group_key(r) for r in train} & {group_key(r) for r in test}
    metformin = [r for r in train + test if "Metformin?" in r["conversation"][0]["input"]
                 and "side effects" in r["conversation"][0]["input"]]
    assert len(metformin) >= 3
    side = {id(r) in {id(x) for x in train} for r in metformin}
    assert len(side) == 1


def test_bad_ratio_and_bad_file(tmp_path):
    src = tmp_path / "all.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _records(3, 1)))
    assert_one_line_error(run_cli("data", "split", src, "--test-ratio", "1.5"), "--test-ratio")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "output": "y"}\n')
    assert_one_line_error(run_cli("data", "split", bad, "-o", tmp_path / "o"), "bad.jsonl", "line 1", "conversation")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_each_side_reports_its_own_counts(tmp_path):
    """40 questions × 3 answers, 30% test grouped: 12 questions there, 28 in train, none on both."""
    from tuitune.data.split import split_file

    src = tmp_path / "all.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    res = split_file(src, tmp_path / "g", 0.3, 7, "input")
    assert (res.train, res.test) == (84, 36)
    assert (res.train_questions, res.test_questions, res.shared_questions) == (28, 12, 0)
    lines = res.lines()
    assert "84 records, 28 distinct questions" in lines[0] and "36 records, 12 distinct questions" in lines[1]
    assert "40" not in lines[1]  # not the whole file's count
    assert "no question is on both sides" in lines[2]
    ungrouped = split_file(src, tmp_path / "u", 0.3, 7, None)
    assert ungrouped.shared_questions > 0 and "on both sides; group by input" in ungrouped.lines()[2]
    assert ungrouped.train_questions + ungrouped.test_questions - ungrouped.shared_questions == 40


def test_the_manifest_goes_with_its_two_files_and_a_users_split_json_is_never_replaced(tmp_path):
    """#20 item 2: split.json names the source (relative to it), its hash, the settings and both sides; a
    folder holds one split, so a second split there needs --force and replaces the manifest with the files."""
    from tuitune.data.split import held_out_of
    from tuitune.fsutil import sha256_of

    (tmp_path / "data").mkdir()
    for name, recs in (("a.jsonl", _records(10, 1)), ("b.jsonl", _records(12, 1))):
        (tmp_path / "data" / name).write_text("".join(json.dumps(r) + "\n" for r in recs))
    proc = run_cli("data", "split", "data/a.jsonl", "-o", "data/s", "--group-by", "input", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "manifest → data/s/split.json" in proc.stdout
    m = json.loads((tmp_path / "data/s/split.json").read_text())
    assert m["source"] == {"file": "../a.jsonl", "sha256": sha256_of(tmp_path / "data/a.jsonl")}
    assert (m["seed"], m["test_ratio"], m["group_by"]) == (42, 0.3, "input")
    assert (m["train"]["file"], m["train"]["records"], m["test"]["file"], m["test"]["records"]) == \
        ("train.jsonl", 7, "test.jsonl", 3)
    assert held_out_of(tmp_path / "data/s/train.jsonl").test == tmp_path / "data/s/test.jsonl"
    assert held_out_of(tmp_path / "data/s/test.jsonl").test is None  # the test side is no train side
    assert_one_line_error(run_cli("data", "split", "data/b.jsonl", "-o", "data/s", cwd=tmp_path), "train.jsonl",
                          "--force")
    assert json.loads((tmp_path / "data/s/split.json").read_text()) == m
    proc = run_cli("data", "split", "data/b.jsonl", "-o", "data/s", "--force", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["manifest_path"] == "data/s/split.json"
    m2 = json.loads((tmp_path / "data/s/split.json").read_text())
    assert m2["source"]["file"] == "../b.jsonl" and m2["train"]["records"] + m2["test"]["records"] == 12
    # A split.json of the user's own is not a manifest: refused, nothing written.
    (tmp_path / "data/u").mkdir()
    (tmp_path / "data/u/split.json").write_text('{"my": "notes"}')
    assert_one_line_error(run_cli("data", "split", "data/a.jsonl", "-o", "data/u", cwd=tmp_path),
                          "data/u/split.json", "not a split's manifest")
    assert sorted(p.name for p in (tmp_path / "data/u").iterdir()) == ["split.json"]
