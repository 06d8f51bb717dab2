"""An existing output is never replaced without ``--force`` (CLI) or ``force=True`` (the TUI, after asking).

``--force`` is one behaviour for every verb (#20 item 15): the new output takes the old one's place, and
the old one is kept beside it as ``NAME.replaced-<time>``, a file or a folder alike, never deleted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli

from tuitune.errors import TuituneError

ROOT = Path(__file__).resolve().parent.parent
MEDQA = ROOT / "sample_data" / "medqa_sample.xlsx"


#: Every verb that writes a file, as typed in the demo workspace: (its line up to -o, the output).
FILE_WRITERS = {
    "data convert": (("data", "convert", "data/medqa_sample.xlsx", "--preset", "medqa", "-o"), "data/out.jsonl"),
    "data self-cognition": (("data", "self-cognition", "--name", "Ada", "--count", "10", "-o"), "data/sc.jsonl"),
    "config new": (("config", "new", "--preset", "tiny-demo", "-o"), "configs/mine.yaml"),
    "train --print-launch": (("train", "configs/tiny-demo.yaml", "--print-launch", "slurm", "-o"), "job.sbatch"),
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("force") / "ws"
    assert run_cli("demo", ws, "--no-open").returncode == 0
    return ws


def asides(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.replaced-*"))


@pytest.mark.parametrize("verb", sorted(FILE_WRITERS))
def test_force_replaces_a_file_and_keeps_the_old_one_beside_it(verb, demo):
    """#20 item 15: one --force for every verb: the new output in place, the old one kept as
    NAME.replaced-<time> (convert, self-cognition, config new and print-launch overwrote it)."""
    argv, out = FILE_WRITERS[verb]
    path = demo / out
    path.write_text("precious\n")
    assert_one_line_error(run_cli(*argv, out, cwd=demo), out, "--force", "NAME.replaced-<time>")
    assert path.read_text() == "precious\n" and not asides(path)
    proc = run_cli(*argv, out, "--force", cwd=demo)
    assert proc.returncode == 0, proc.stderr
    assert path.read_text() != "precious\n"
    (aside,) = asides(path)
    assert aside.read_text() == "precious\n"
    assert f"the file that was there is now {out}.replaced-" in proc.stdout


def test_split_refuses_existing_outputs_and_force_keeps_all_three(demo):
    dest = demo / "data" / "split"
    dest.mkdir()
    (dest / "test.jsonl").write_text("old test\n")
    proc = run_cli("data", "split", "data/self_cognition.jsonl", "-o", "data/split", cwd=demo)
    assert_one_line_error(proc, "test.jsonl", "--force")
    assert not (dest / "train.jsonl").exists() and (dest / "test.jsonl").read_text() == "old test\n"
    assert run_cli("data", "split", "data/self_cognition.jsonl", "-o", "data/split", "--force",
                   cwd=demo).returncode == 0
    assert (dest / "train.jsonl").exists() and (dest / "test.jsonl").read_text() != "old test\n"
    assert [p.read_text() for p in asides(dest / "test.jsonl")] == ["old test\n"]
    assert not asides(dest / "train.jsonl")  # nothing was there
    old = {name: (dest / name).read_text() for name in ("train.jsonl", "test.jsonl", "split.json")}
    proc = run_cli("data", "split", "data/self_cognition.jsonl", "-o", "data/split", "--seed", "7", "--force",
                   cwd=demo)
    assert proc.returncode == 0, proc.stderr
    for name, text in old.items():
        assert asides(dest / name)[-1].read_text() == text, name


def test_a_forced_command_that_fails_leaves_the_old_output_and_nothing_beside_it(demo, tmp_path):
    out = demo / "data" / "keep.jsonl"
    out.write_text("keep\n")
    proc = run_cli("data", "convert", "data/medqa_sample.xlsx", "-o", "data/keep.jsonl", "--format", "bogus",
                   "--force", cwd=demo)
    assert_one_line_error(proc, "--format")
    assert out.read_text() == "keep\n" and not asides(out)
    gguf = demo / "keep.gguf"
    gguf.write_text("mine")
    env = {"TUITUNE_CACHE": str(tmp_path / "cache"), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "LLAMA_CPP_DIR": ""}
    proc = run_cli("export", "models/tiny-chat", "--format", "gguf", "-o", "keep.gguf", "--llama-cpp", "nowhere",
                   "--force", cwd=demo, env=env)
    assert_one_line_error(proc, "no GGUF converter")
    assert gguf.read_text() == "mine" and not asides(gguf)


def test_kept_aside_files_and_folders(tmp_path):
    from tuitune.fsutil import atomic_write_text, kept_aside, publish_dir

    notes: list[str] = []
    f = tmp_path / "f.txt"
    f.write_text("old")
    with kept_aside(f, force=True, note=notes.append):
        atomic_write_text(f, "new")
    (aside,) = asides(f)
    assert (f.read_text(), aside.read_text()) == ("new", "old") and notes == [f"the file that was there is now {aside}"]
    aside.unlink()
    with kept_aside(f, force=True, note=notes.append):  # the writer left it as it was
        pass
    assert not asides(f) and f.read_text() == "new"
    with pytest.raises(RuntimeError), kept_aside(f, force=True, note=notes.append):
        raise RuntimeError("the writer failed")
    assert not asides(f) and f.read_text() == "new" and len(notes) == 1
    d = tmp_path / "model"
    d.mkdir()
    (d / "w").write_text("old weights")
    new = tmp_path / ".new"
    new.mkdir()
    with kept_aside(d, force=True, note=notes.append):
        publish_dir(new, d)
    (moved,) = asides(d)
    assert (moved / "w").read_text() == "old weights" and notes[-1] == f"the folder that was there is now {moved}"
    with kept_aside(tmp_path / "g.txt", f, force=False, note=notes.append):
        pass
    assert len(notes) == 2


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
