"""tuitune data inspect: validation, token statistics and the trained/masked view."""

from __future__ import annotations

import json

from tests.conftest import ROOT, assert_one_line_error, run_cli


def test_inspect_prints_stats_truncation_and_marks_trained_text(tmp_path, tiny_model):
    src = ROOT / "sample_data/self_cognition.jsonl"
    lines = src.read_text(encoding="utf-8").splitlines()
    n = next(i for i, l in enumerate(lines, 1) if "请介绍一下你自己" in l)
    proc = run_cli("data", "inspect", src, "--model", tiny_model, "--max-length", "30", "--record", n)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "150 records, all valid" in out
    assert "min " in out and "median " in out and "p95 " in out and "max " in out
    assert "truncated at 30:" in out
    truncated = int(out.split("truncated at 30: ")[1].split(" of")[0])
    assert 0 < truncated < 150
    # The record asks 请介绍一下你自己: the question is masked, the answer is trained (cut at 30 tokens).
    assert "user↵\n请介绍一下你自己<|im_end|>↵\n<|im_start|>assistant↵\n⟦我是Alice" in out
    full = run_cli("data", "inspect", src, "--model", tiny_model, "--record", n).stdout
    assert "⟦我是Alice的小助手，很高兴为你服务。<|im_end|>⟧↵" in full  # the end-of-turn is trained, the newline not
    assert "truncated at 2048: 0 of 150" in full


def test_inspect_json_and_named_template(tmp_path, tiny_model):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"conversation": [{"system": "S", "input": "Q1", "output": "A1"},
                                              {"input": "Q2", "output": "A2"}]}, ensure_ascii=False) + "\n")
    proc = run_cli("data", "inspect", f, "--model", tiny_model, "--template", "qwen_chat", "--json")
    res = json.loads(proc.stdout)
    trained = [t for t, flag in res["spans"] if flag]
    assert trained == ["A1<|im_end|>", "A2<|im_end|>"]
    assert res["truncated"] == 0 and res["records"] == 1


def test_inspect_bad_input(tmp_path, tiny_model):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"conversation": [{"input": "Q", "output": 3}]}) + "\n")
    assert_one_line_error(run_cli("data", "inspect", f, "--model", tiny_model), "c.jsonl", "line 1", "output")
    ok = tmp_path / "ok.jsonl"
    ok.write_text(json.dumps({"conversation": [{"input": "Q", "output": "A"}]}) + "\n")
    assert_one_line_error(run_cli("data", "inspect", ok, "--model", tmp_path / "nomodel"), "nomodel")
    assert_one_line_error(run_cli("data", "inspect", ok, "--model", tiny_model, "--template", "nope"),
                          "nope", "qwen_chat", "auto")


def test_a_spreadsheet_is_named_as_one_with_the_convert_line(workspace):
    """#20 item 10: `data inspect FILE.xlsx` said "not UTF-8 (byte 0xa7 ...); save it as UTF-8". The
    reader says what the file is and the `data convert` line, for every verb that reads records;
    typed from the workspace with relative paths."""
    import shutil

    shutil.copy(ROOT / "sample_data" / "medqa_sample.xlsx", workspace / "data" / "MedInfo2019-QA-Medications.xlsx")
    (workspace / "data" / "table.csv").write_text("Question,Answer\nq,a\n")
    (workspace / "data" / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 64)
    shutil.copy(ROOT / "sample_data" / "medqa_sample.xlsx", workspace / "data" / "sheet.json")  # a misnamed one
    med = "data/MedInfo2019-QA-Medications.xlsx"
    for verb in (("data", "inspect", med, "--model", "models/tiny-chat"), ("data", "split", med)):
        line = assert_one_line_error(run_cli(*verb, cwd=workspace), med, "spreadsheet",
                                     f"tuitune data convert {med} -o data/MedInfo2019-QA-Medications.jsonl")
        assert "UTF-8" not in line
    assert_one_line_error(run_cli("data", "split", "data/table.csv", cwd=workspace), "data/table.csv", "CSV",
                          "tuitune data convert data/table.csv -o data/table.jsonl")
    for verb in (("data", "split", "data/old.xls"), ("data", "convert", "data/old.xls", "-o", "data/old.jsonl")):
        assert_one_line_error(run_cli(*verb, cwd=workspace), "data/old.xls", "Excel 97-2003", "save it as .xlsx",
                              "tuitune data convert data/old.xlsx -o data/old.jsonl")
    assert_one_line_error(run_cli("data", "inspect", "data/sheet.json", "--model", "models/x", cwd=workspace),
                          "data/sheet.json", "spreadsheet", "rename it to sheet.xlsx",
                          "tuitune data convert data/sheet.xlsx -o data/sheet.jsonl")
    assert not (workspace / "data" / "old.jsonl").exists()
    # The line it gives works as typed.
    proc = run_cli("data", "convert", med, "-o", "data/MedInfo2019-QA-Medications.jsonl", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    assert (workspace / "data" / "MedInfo2019-QA-Medications.jsonl").stat().st_size > 0
