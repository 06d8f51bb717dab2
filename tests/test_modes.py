"""Every file and folder tuitune writes gets the umask's mode (as ``open()``/``mkdir()`` give it).

Each command runs in a child process whose umask is set before it starts (``preexec_fn``),
as a user's shell would have it: 022 (files 0644, folders 0755) and 002 (0664, 0775).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import make_workspace, write_config

ROOT = Path(__file__).resolve().parent.parent
MEDQA = ROOT / "sample_data" / "medqa_sample.xlsx"


def run_umask(mask: int, *args, cwd=None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m tuitune ARGS`` (or ``python -c CODE`` when args[0] == "-c") under umask ``mask``."""
    argv = [sys.executable, *map(str, args)] if args and args[0] == "-c" else [sys.executable, "-m", "tuitune",
                                                                              *map(str, args)]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, preexec_fn=lambda: os.umask(mask))


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def assert_modes(mask: int, *paths: Path) -> None:
    """Each path (and everything under a folder) has the umask's mode; nothing is private by accident."""
    want_file, want_dir = 0o666 & ~mask, 0o777 & ~mask
    wrong = []
    for top in paths:
        assert top.exists(), top
        items = [top] + (sorted(top.rglob("*")) if top.is_dir() else [])
        for p in items:
            if p.is_symlink():
                continue
            want = want_dir if p.is_dir() else want_file
            if mode(p) != want:
                wrong.append(f"{p}: {oct(mode(p))}, want {oct(want)}")
    assert not wrong, "\n".join(wrong)


def test_fsutil_helpers_follow_the_umask(tmp_path):
    code = f"""
import os, stat, sys
from pathlib import Path
from tuitune.fsutil import atomic_write_text, current_umask, fix_modes, make_temp_dir
root = Path({str(tmp_path)!r})
print(oct(current_umask()))
atomic_write_text(root / "a.txt", "x")
d = make_temp_dir(prefix="t-", dir=root)
(d / "shard").write_bytes(b"")
os.chmod(d / "shard", 0o600)
fix_modes(d)
print(oct(stat.S_IMODE(os.stat(root / "a.txt").st_mode)), oct(stat.S_IMODE(os.stat(d).st_mode)),
      oct(stat.S_IMODE(os.stat(d / "shard").st_mode)))
"""
    proc = run_umask(0o002, "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0o2", "0o664", "0o775", "0o664"], proc.stdout


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_config_and_data_files_get_the_umasks_mode(tmp_path, mask):
    ws = tmp_path / "ws"
    (ws / "configs").mkdir(parents=True)
    (ws / "data").mkdir()
    cfg = ws / "configs" / "mine.yaml"
    assert run_umask(mask, "config", "new", "--preset", "tiny-demo", "-o", cfg).returncode == 0
    out = ws / "data" / "medqa.jsonl"
    proc = run_umask(mask, "data", "convert", MEDQA, "-o", out, "--preset", "medqa")
    assert proc.returncode == 0, proc.stderr
    sc = ws / "data" / "sc.jsonl"
    proc = run_umask(mask, "data", "self-cognition", "--name", "Ada", "--count", "20", "-o", sc)
    assert proc.returncode == 0, proc.stderr
    proc = run_umask(mask, "data", "split", out, "-o", ws / "data" / "split")
    assert proc.returncode == 0, proc.stderr
    # A transcript saved from Chat (the engine's writer; a session is anything with conversation()).
    transcript = ws / "data" / "chat.jsonl"
    code = f"""
from tuitune.chat import save_conversations
class S:
    def conversation(self):
        return {{"conversation": [{{"input": "hi", "output": "hello"}}]}}
save_conversations({str(transcript)!r}, [S()])
"""
    proc = run_umask(mask, "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert_modes(mask, cfg, out, sc, ws / "data" / "split", transcript)


@pytest.mark.slow
@pytest.mark.parametrize("mask", [0o002])
def test_a_run_folder_and_a_merged_model_get_the_umasks_mode(tmp_path, tiny_model, mask):
    ws = make_workspace(tmp_path / "ws", tiny_model)
    cfg = write_config(ws, "quick", **{"training.max_steps": 2, "training.save_steps": 1,
                                       "evaluation.prompts": []})
    proc = run_umask(mask, "-w", ws, "train", cfg, "--foreground", "--name", "r1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = ws / "runs" / "r1"
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    assert_modes(mask, run / "config.yaml", run / "state.json", run / "events.jsonl", run / "adapter",
                 run / "checkpoints" / "checkpoint-2")
    out = ws / "models" / "r1-merged"
    proc = run_umask(mask, "-w", ws, "merge", "r1", "-o", out, "--max-shard-size", "1MB")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sum(p.suffix == ".safetensors" for p in out.iterdir()) >= 2
    assert_modes(mask, out)
    # The exported adapter, too.
    exp = ws / "models" / "r1-adapter"
    proc = run_umask(mask, "-w", ws, "merge", "r1", "--export-adapter", exp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_modes(mask, exp)


@pytest.mark.parametrize("mask", [0o002])
def test_the_demo_workspace_gets_the_umasks_mode(tmp_path, tiny_model, mask):
    ws = tmp_path / "demo"
    proc = run_umask(mask, "demo", ws, "--no-open")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert any((ws / "models" / "tiny-chat").glob("*.safetensors"))
    assert_modes(mask, ws / "models" / "tiny-chat", ws / "data", ws / "configs")
