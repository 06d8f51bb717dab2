"""An existing output is never replaced without ``--force`` (CLI) or ``force=True`` (the TUI, after asking)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli

from tuitune.errors import TuituneError

ROOT = Path(__file__).resolve().parent.parent
MEDQA = ROOT / "sample_data" / "medqa_sample.xlsx"
SELFCOG = ROOT / "sample_data" / "self_cognition.jsonl"


def test_convert_refuses_an_existing_output_unless_forced(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    proc = run_cli("data", "convert", MEDQA, "-o", out, "--preset", "medqa")
    assert_one_line_error(proc, str(out), "--force")
    assert out.read_text() == "precious\n"
    proc = run_cli("data", "convert", MEDQA, "-o", out, "--preset", "medqa", "--force")
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() != "precious\n"


def test_self_cognition_refuses_an_existing_output_unless_forced(tmp_path):
    out = tmp_path / "sc.jsonl"
    out.write_text("mine\n")
    proc = run_cli("data", "self-cognition", "--name", "Ada", "--count", "10", "-o", out)
    assert_one_line_error(proc, str(out), "--force")
    assert out.read_text() == "mine\n"
    proc = run_cli("data", "self-cognition", "--name", "Ada", "--count", "10", "-o", out, "--force")
    assert proc.returncode == 0, proc.stderr
    assert len(out.read_text().splitlines()) == 10


def test_split_refuses_existing_outputs_and_writes_neither(tmp_path):
    dest = tmp_path / "split"
    dest.mkdir()
    (dest / "test.jsonl").write_text("old test\n")
    proc = run_cli("data", "split", SELFCOG, "-o", dest)
    assert_one_line_error(proc, "test.jsonl", "--force")
    assert not (dest / "train.jsonl").exists() and (dest / "test.jsonl").read_text() == "old test\n"
    proc = run_cli("data", "split", SELFCOG, "-o", dest, "--force")
    assert proc.returncode == 0, proc.stderr
    assert (dest / "train.jsonl").exists() and (dest / "test.jsonl").read_text() != "old test\n"


def test_config_new_refuses_an_existing_file_unless_forced(tmp_path):
    out = tmp_path / "c.yaml"
    out.write_text("# mine\n")
    assert_one_line_error(run_cli("config", "new", "--preset", "tiny-demo", "-o", out), str(out), "--force")
    assert out.read_text() == "# mine\n"
    assert run_cli("config", "new", "--preset", "tiny-demo", "-o", out, "--force").returncode == 0


def test_engine_writers_take_force(tmp_path):
    from tuitune.config import get_preset, save_config
    from tuitune.data.convert import convert
    from tuitune.data.io import write_records

    out = tmp_path / "o.jsonl"
    out.write_text("keep\n")
    with pytest.raises(TuituneError, match="exists"):
        convert(MEDQA, out, preset="medqa")
    assert out.read_text() == "keep\n"
    assert convert(MEDQA, out, preset="medqa", force=True).kept > 0
    rec = {"conversation": [{"input": "q", "output": "a"}]}
    with pytest.raises(TuituneError, match="exists"):
        write_records(out, [rec], force=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("# mine\n")
    with pytest.raises(TuituneError, match="exists"):
        save_config(get_preset("tiny-demo"), cfg, force=False)
    assert cfg.read_text() == "# mine\n"


def test_next_free_path_bumps_files_and_folders(tmp_path):
    from tuitune.fsutil import next_free_path

    x = tmp_path / "x.jsonl"
    assert next_free_path(x) == x
    x.write_text("1")
    assert next_free_path(x) == tmp_path / "x-2.jsonl"
    (tmp_path / "x-2.jsonl").write_text("2")
    assert next_free_path(x) == tmp_path / "x-3.jsonl"
    assert next_free_path(tmp_path / "x-2.jsonl") == tmp_path / "x-3.jsonl"
    m = tmp_path / "r1-merged"
    m.mkdir()
    assert next_free_path(m) == m  # an empty folder is free
    (m / "config.json").write_text("{}")
    assert next_free_path(m) == tmp_path / "r1-merged-2"
    q = tmp_path / "Qwen2.5-7B"  # a dot in a folder name is no extension
    q.mkdir()
    (q / "f").write_text("")
    assert next_free_path(q) == tmp_path / "Qwen2.5-7B-2"
