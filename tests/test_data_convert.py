"""tuitune data convert: detection, the MedQA sheet, fidelity, reports and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, assert_one_line_error, run_cli
from tuitune.data import convert, detect_format, load_records
from tuitune.data.convert import MEDQA_COLUMNS, MEDQA_SYSTEM
from tuitune.errors import TuituneError

SAMPLES = ROOT / "sample_data"
MEDQA = SAMPLES / "medqa_sample.xlsx"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def write_xlsx(path: Path, rows: list[list], sheet: str = "Sheet1") -> Path:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = sheet
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


@pytest.mark.parametrize("name, fmt, why", [
    ("medqa_sample.xlsx", "xlsx", "extension"),
    ("alpaca_sample.json", "alpaca", "instruction"),
    ("sharegpt_sample.json", "sharegpt", "from"),
    ("oasst1_sample.jsonl", "oasst1", "### Human"),
    ("pretrain.txt", "txt", "paragraph"),
    ("self_cognition.jsonl", "xtuner", "conversation"),
])
def test_detects_each_sample_format_and_says_why(name, fmt, why):
    det = detect_format(SAMPLES / name)
    assert det.format == fmt
    assert why.lower() in det.reason.lower()


def test_detects_openai_messages_and_plain_text_records(tmp_path):
    p = tmp_path / "chat.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                                          {"role": "assistant", "content": "A"}]}) + "\n")
    assert detect_format(p).format == "openai"
    rep = convert(p, tmp_path / "o.jsonl")
    assert read_jsonl(tmp_path / "o.jsonl") == [{"conversation": [{"system": "S", "input": "Q", "output": "A"}]}]
    t = tmp_path / "pt.jsonl"
    t.write_text(json.dumps({"text": "plain corpus text"}) + "\n")
    assert detect_format(t).format == "text"
    convert(t, tmp_path / "pt_out.jsonl")
    assert read_jsonl(tmp_path / "pt_out.jsonl") == [{"conversation": [{"input": "", "output": "plain corpus text"}]}]
    assert rep.kept == 1


def test_medqa_preset_maps_question_answer_and_the_tutorial_system_prompt(tmp_path):
    out = tmp_path / "medqa.jsonl"
    rep = convert(MEDQA, out, preset="medqa")
    recs = read_jsonl(out)
    assert rep.kept == len(recs) == 41
    first = recs[0]["conversation"][0]
    assert first["system"] == MEDQA_SYSTEM
    assert first["input"].endswith("?") and len(first["output"]) > 50
    # Every record is a single turn with the fixed system prompt.
    assert all(r["conversation"][0]["system"] == MEDQA_SYSTEM for r in recs)


def test_cells_are_kept_as_written(tmp_path):
    out = tmp_path / "m.jsonl"
    convert(MEDQA, out, preset="medqa")
    text = out.read_text(encoding="utf-8")
    assert "\\u" not in text  # UTF-8, not ASCII-escaped
    recs = read_jsonl(out)
    by_q = {r["conversation"][0]["input"]: r["conversation"][0]["output"] for r in recs}
    warfarin = by_q["What should I tell my doctor before taking Warfarin?\n(list all)"]
    assert warfarin == "Tell your doctor:\n\t- if you are pregnant\n\t- if you drink alcohol\nDose:\u00a05\u00a0mg"
    assert by_q["How many tablets of Amlodipine per day?"] == "1"   # not "1.0"
    assert by_q["Is Ibuprofen safe during pregnancy?"] == "n/a"     # not NaN, kept by default
    assert by_q["阿莫西林有什么副作用？"].startswith("可能出现腹泻")
    assert "What\u00a0are the side effects of Metformin?" in by_q  # nbsp kept in the input too


def test_report_names_skipped_rows_placeholders_and_duplicates(tmp_path):
    rep = convert(MEDQA, tmp_path / "m.jsonl", preset="medqa")
    skipped = {i.where: i.reason for i in rep.skipped}
    assert skipped == {"row 42": "empty 'Answer'", "row 43": "empty 'Question'", "row 44": "empty row"}
    assert [i.where for i in rep.placeholders] == ["row 35", "row 36", "row 37"]
    assert rep.duplicate_count == 1 and rep.duplicates[0].reason == "same as row 38"
    assert rep.repeated_inputs >= 1
    text = "\n".join(rep.lines())
    assert "--drop-placeholders" in text and "--dedupe" in text and "row 42: empty 'Answer'" in text


def test_drop_placeholders_and_dedupe_are_opt_in(tmp_path):
    kept = convert(MEDQA, tmp_path / "a.jsonl", preset="medqa")
    dropped = convert(MEDQA, tmp_path / "b.jsonl", preset="medqa", drop_placeholders=True, dedupe=True)
    assert dropped.kept == kept.kept - 3 - 1
    outs = [r["conversation"][0]["output"] for r in read_jsonl(tmp_path / "b.jsonl")]
    assert "n/a" not in outs and "No answers" not in outs
    assert len(outs) == len(set(map(str, read_jsonl(tmp_path / "b.jsonl"))))


def test_json_array_output_and_load_records_reads_both(tmp_path):
    convert(SAMPLES / "alpaca_sample.json", tmp_path / "a.json")
    doc = json.loads((tmp_path / "a.json").read_text(encoding="utf-8"))
    assert isinstance(doc, list) and len(doc) == 6
    convert(SAMPLES / "alpaca_sample.json", tmp_path / "a.jsonl")
    assert load_records(tmp_path / "a.json") == load_records(tmp_path / "a.jsonl") == doc
    assert doc[3]["conversation"][0]["input"] == "What is LoRA?\nAnswer in one sentence."


def test_sharegpt_and_oasst_keep_every_turn(tmp_path):
    convert(SAMPLES / "sharegpt_sample.json", tmp_path / "s.jsonl")
    first = read_jsonl(tmp_path / "s.jsonl")[0]["conversation"]
    assert [t.get("system") for t in first] == ["You are a helpful assistant.", None]
    assert first[1]["input"] == "Why does training need one?"
    convert(SAMPLES / "oasst1_sample.jsonl", tmp_path / "o.jsonl")
    two = read_jsonl(tmp_path / "o.jsonl")[1]["conversation"]
    assert len(two) == 2 and two[1]["input"] == "Is it good for beginners?"


def test_csv_in_gbk_and_utf8_sig_and_column_mapping(tmp_path):
    rows = "问题,答案,备注\n感冒了怎么办？,多喝水，注意休息。,x\n\"多行\n问题\",\"答案\t带制表符\",y\n"
    for enc in ("gbk", "utf-8-sig", "utf-8"):
        p = tmp_path / f"qa_{enc}.csv"
        p.write_bytes(rows.encode(enc))
        rep = convert(p, tmp_path / f"{enc}.jsonl", input_col="问题", output_col="答案", system="SYS")
        assert rep.encoding.replace("-sig", "") == {"utf-8-sig": "utf-8"}.get(enc, enc)
        recs = read_jsonl(tmp_path / f"{enc}.jsonl")
        assert recs[1] == {"conversation": [{"system": "SYS", "input": "多行\n问题", "output": "答案\t带制表符"}]}


def test_columns_guessed_from_header_names(tmp_path):
    p = write_xlsx(tmp_path / "qa.xlsx", [["id", "Prompt", "Response"], [1, "hi", "hello"]])
    rep = convert(p, tmp_path / "o.jsonl")
    assert "'Prompt' → input" in rep.mapping
    assert read_jsonl(tmp_path / "o.jsonl") == [{"conversation": [{"input": "hi", "output": "hello"}]}]


# --- bad input: exit 2, one error line naming the file/row/field, no output left ----------------

def _bad(tmp_path, *args, needles=()):
    out = tmp_path / "out.jsonl"
    proc = run_cli("data", "convert", *map(str, args), "-o", str(out))
    assert_one_line_error(proc, *needles)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.jsonl")]  # no temp file left
    return proc


def test_bad_not_an_xlsx(tmp_path):
    p = tmp_path / "fake.xlsx"
    p.write_text("Question,Answer\nq,a\n")
    _bad(tmp_path, p, needles=("fake.xlsx", "not", "xlsx"))


def test_bad_missing_sheet_lists_sheets(tmp_path):
    _bad(tmp_path, MEDQA, "--sheet", "Drugs", needles=("medqa_sample.xlsx", "'Drugs'", "DrugQA", "Notes"))


def test_bad_missing_column_lists_columns(tmp_path):
    _bad(tmp_path, MEDQA, "--input-col", "Questions", "--output-col", "Answer",
         needles=("'Questions'", "'Question'", "'Focus (Drug)'", "'URL'"))


def test_bad_empty_sheet(tmp_path):
    from openpyxl import Workbook

    wb = Workbook()
    wb.active.title = "DrugQA"
    wb.save(tmp_path / "empty.xlsx")
    _bad(tmp_path, tmp_path / "empty.xlsx", needles=("empty.xlsx", "DrugQA", "empty"))


def test_bad_json_syntax_names_line_and_column(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c" "output": "d"}\n]\n')
    _bad(tmp_path, p, needles=("broken.json", "line 3", "column 23"))


def test_bad_jsonl_line_and_skip_bad_lines(tmp_path):
    p = tmp_path / "data.jsonl"
    good = json.dumps({"instruction": "q", "output": "a"})
    p.write_text(f"{good}\n{good[:-3]}\n{good}\n")
    _bad(tmp_path, p, needles=("data.jsonl", "line 2", "--skip-bad-lines"))
    out = tmp_path / "ok.jsonl"
    proc = run_cli("data", "convert", p, "-o", out, "--skip-bad-lines")
    assert proc.returncode == 0, proc.stderr
    assert "line 2" in proc.stdout and "kept 2 of 2" in proc.stdout
    assert len(read_jsonl(out)) == 2


def test_bad_records_without_the_mapped_fields(tmp_path):
    p = tmp_path / "qa.jsonl"
    p.write_text(json.dumps({"q": "a", "a": "b"}) + "\n" + json.dumps({"q": "c"}) + "\n")
    _bad(tmp_path, p, "--input-col", "q", "--output-col", "a", needles=("qa.jsonl", "line 2", "'a'"))
    p2 = tmp_path / "alp.json"
    p2.write_text(json.dumps([{"instruction": "x", "output": "y"}, {"instruction": "z"}]))
    _bad(tmp_path, p2, needles=("alp.json", "record 2", "output"))


def test_bad_csv_neither_utf8_nor_gbk(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("Question,Answer\nq,a\n".encode("utf-16"))
    _bad(tmp_path, p, needles=("latin.csv", "UTF-8", "GBK"))


def test_bad_conversation_with_empty_output(tmp_path):
    p = tmp_path / "conv.jsonl"
    p.write_text(json.dumps({"conversation": [{"input": "q", "output": "a"}]}) + "\n"
                 + json.dumps({"conversation": [{"input": "q1", "output": "a1"}, {"input": "q2", "output": "  "}]}) + "\n")
    _bad(tmp_path, p, needles=("conv.jsonl", "line 2", "turn 2", "empty output"))
    with pytest.raises(TuituneError, match="line 2: turn 2"):
        load_records(p)


def test_an_existing_output_survives_a_failed_convert(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    proc = run_cli("data", "convert", bad, "-o", out, "--force")
    assert_one_line_error(proc, "bad.json")
    assert out.read_text() == "precious\n"


def test_cli_prints_detection_and_report(tmp_path):
    proc = run_cli("data", "convert", MEDQA, "-o", tmp_path / "m.jsonl", "--preset", "medqa")
    assert proc.returncode == 0, proc.stderr
    assert "format: xlsx" in proc.stdout and "kept 41 of 44" in proc.stdout
    proc = run_cli("data", "convert", MEDQA, "-o", tmp_path / "m.jsonl", "--json", "--force")
    rep = json.loads(proc.stdout)
    assert rep["kept"] == 41 and rep["placeholder_count"] == 3 and rep["duplicate_count"] == 1


def test_medqa_columns_in_sample_sheet():
    from openpyxl import load_workbook

    wb = load_workbook(MEDQA, read_only=True)
    assert wb.sheetnames[0] == "DrugQA"
    assert tuple(next(wb["DrugQA"].iter_rows(values_only=True))) == MEDQA_COLUMNS
    wb.close()


@pytest.mark.parametrize("layout", ["excel", "openpyxl"])
def test_xlsx_memory_stays_bounded(tmp_path, layout):
    """Long unique answers: rows stream, and an Excel-style shared-string table stays on disk."""
    import random
    import tracemalloc

    from tuitune.data.synth import write_excel_like_xlsx

    rng = random.Random(0)
    rows = [["Question", "Answer"]]
    for i in range(3000):
        rows.append([f"question {i}?", f"{i} " + "".join(rng.choices("abcdefghij ", k=6000))])
    total = sum(len(r[1]) for r in rows[1:])
    if layout == "excel":
        write_excel_like_xlsx(tmp_path / "big.xlsx", {"DrugQA": rows})
    else:
        from openpyxl import Workbook

        wb = Workbook(write_only=True)
        ws = wb.create_sheet("DrugQA")
        for r in rows:
            ws.append(r)
        wb.save(tmp_path / "big.xlsx")
    del rows
    convert(MEDQA, tmp_path / "warm.jsonl")  # imports (openpyxl, numpy) are not what is measured
    tracemalloc.start()
    rep = convert(tmp_path / "big.xlsx", tmp_path / "big.jsonl")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert rep.kept == 3000
    assert total > 16_000_000 and peak < total / 8, (peak, total)


def test_shared_strings_read_as_openpyxl_reads_them():
    """The disk-backed string table gives the same text as openpyxl's own reader, rich text included."""
    import io

    from openpyxl.reader.strings import read_string_table

    from tuitune.data.tabular import _read_disk_strings

    xml = ('<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
           '<si><r><rPr><b/></rPr><t>bold</t></r><r><t xml:space="preserve"> plain</t></r></si>'
           '<si><t xml:space="preserve">  lead\n\ttab\u00a0nbsp 中文 </t></si><si><t/></si>'
           '<si><t>x</t><rPh sb="0" eb="1"><t>y</t></rPh></si></sst>').encode()
    expected = read_string_table(io.BytesIO(xml))
    got = _read_disk_strings(io.BytesIO(xml))
    assert [got.text(i) for i in range(len(got))] == expected
    assert expected[1] == "  lead\n\ttab\u00a0nbsp 中文 "


def test_system_column_and_conflicting_system_options(tmp_path):
    p = write_xlsx(tmp_path / "s.xlsx", [["sys", "q", "a"], ["Be brief.", "hi", "hello"], ["", "x", "y"]], "Data")
    convert(p, tmp_path / "o.jsonl", sheet="Data", input_col="q", output_col="a", system_col="sys")
    assert read_jsonl(tmp_path / "o.jsonl") == [
        {"conversation": [{"system": "Be brief.", "input": "hi", "output": "hello"}]},
        {"conversation": [{"input": "x", "output": "y"}]}]
    with pytest.raises(TuituneError, match="--system-col and --system"):
        convert(p, tmp_path / "o2.jsonl", input_col="q", output_col="a", system_col="sys", system="S")
    assert not (tmp_path / "o2.jsonl").exists()


# --- #20 item 12: each message says the fix, in the CLI's words (tests/test_data_messages.py: the TUI's) ---

def workbook(path: Path, sheets: dict[str, list[list]]) -> Path:
    """A workbook with these sheets (an empty list: an empty sheet), in this order."""
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for r in rows:
            ws.append(r)
    wb.save(path)
    return path


QA = [["Question", "Answer"], ["What is it?", "A drug."]]


def test_an_empty_workbook_says_it_has_no_rows_not_pick_another_sheet(workspace):
    """It said "choose another sheet with --sheet (sheets: Sheet)" of a workbook with one sheet."""
    workbook(workspace / "data" / "empty.xlsx", {"Sheet": []})
    line = assert_one_line_error(run_cli("data", "convert", "data/empty.xlsx", "-o", "data/e.jsonl", cwd=workspace),
                                 "data/empty.xlsx", "the workbook has no rows", "its only sheet, 'Sheet', is empty",
                                 "fill in a header row and data rows, or pick another file")
    assert "--sheet" not in line and "another sheet" not in line
    workbook(workspace / "data" / "empty2.xlsx", {"A": [], "B": []})
    assert_one_line_error(run_cli("data", "convert", "data/empty2.xlsx", "--sheet", "B", "-o", "data/e.jsonl",
                                  cwd=workspace), "'A', 'B' are all empty", "pick another file")
    assert not (workspace / "data" / "e.jsonl").exists()


def test_the_first_sheet_with_rows_is_read_and_an_empty_one_named_says_which_have_rows(workspace):
    workbook(workspace / "data" / "multi.xlsx", {"Sheet1": [], "Notes": [], "QA": QA})
    proc = run_cli("data", "convert", "data/multi.xlsx", "-o", "data/m.jsonl", cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    assert "sheet 'QA'" in proc.stdout and len(read_jsonl(workspace / "data" / "m.jsonl")) == 1
    assert_one_line_error(run_cli("data", "convert", "data/multi.xlsx", "--sheet", "Notes", "-o", "data/n.jsonl",
                                  cwd=workspace),
                          "sheet 'Notes' is empty", "pick another with --sheet", "sheets with rows: QA")
    assert_one_line_error(run_cli("data", "convert", "data/multi.xlsx", "--sheet", "Drugs", "-o", "data/n.jsonl",
                                  cwd=workspace), "no sheet 'Drugs'", "sheets: Sheet1, Notes, QA", "pick one with --sheet")


def test_preset_on_another_workbook_says_the_fix(workspace):
    """It said "no sheet 'DrugQA'; sheets: Sheet" with no fix."""
    workbook(workspace / "data" / "other.xlsx", {"Sheet": QA})
    assert_one_line_error(run_cli("data", "convert", "data/other.xlsx", "--preset", "medqa", "-o", "data/o.jsonl",
                                  cwd=workspace),
                          "no sheet 'DrugQA', which --preset medqa reads", "sheets: Sheet", "--sheet",
                          "drop --preset medqa", "--input-col and --output-col")
    # The fix as said: --sheet with the preset converts it, with the tutorial's system prompt.
    proc = run_cli("data", "convert", "data/other.xlsx", "--preset", "medqa", "--sheet", "Sheet", "-o", "data/o.jsonl",
                   cwd=workspace)
    assert proc.returncode == 0, proc.stderr
    assert read_jsonl(workspace / "data" / "o.jsonl")[0]["conversation"][0]["system"] == MEDQA_SYSTEM
    # A sheet without the preset's columns names them and both ways out.
    workbook(workspace / "data" / "cols.xlsx", {"DrugQA": [["Q", "A"], ["q", "a"]]})
    assert_one_line_error(run_cli("data", "convert", "data/cols.xlsx", "--preset", "medqa", "-o", "data/c.jsonl",
                                  cwd=workspace),
                          "no column 'Question'", "--preset medqa maps 'Question' and 'Answer'",
                          "--input-col and --output-col", "drop --preset medqa")
