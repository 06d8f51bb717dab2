"""The CLI surface: help, usage errors, one-line errors, the demo workspace, env."""

import json
import subprocess
import sys

from conftest import assert_one_line_error, run_cli


def test_help_lists_the_built_verbs():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for verb in ("demo", "env"):
        assert verb in proc.stdout


def test_unknown_verb_is_a_usage_error():
    proc = run_cli("frobnicate")
    assert proc.returncode == 2
    assert "usage: tuitune" in proc.stderr
    assert "invalid choice: 'frobnicate'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_flag_is_a_usage_error():
    proc = run_cli("env", "--bogus")
    assert proc.returncode == 2
    assert "unrecognized arguments: --bogus" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_env_json_gives_an_honest_no_gpu_diagnosis():
    proc = run_cli("env", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    for c in report["checks"]:
        assert set(c) == {"name", "status", "detail", "fix"}
        assert c["status"] in ("ok", "warn", "fail")
        if c["status"] != "ok":
            assert c["fix"], f"{c['name']} is {c['status']} but says nothing to do"
    for name in ("python", "torch", "driver", "cuda", "bf16", "bitsandbytes", "deepspeed", "flash-attn",
                 "transformers", "peft", "accelerate", "datasets", "disk", "ram", "hf-cache", "tmux"):
        assert name in checks, name
    # This machine has no GPU: the diagnosis must say so, never "ok".
    assert checks["cuda"]["status"] in ("warn", "fail")
    assert "no CUDA GPU" in checks["cuda"]["detail"]
    assert report["gpus"] == []
    # bitsandbytes 0.50 quantizes nf4 on this CPU; the check tries it for real.
    assert "CPU" in checks["bitsandbytes"]["detail"]


def test_env_table_names_what_to_fix():
    proc = run_cli("env")
    assert proc.returncode == 0, proc.stderr
    assert "cuda" in proc.stdout and "FAIL" in proc.stdout
    assert "to fix" in proc.stdout


def test_demo_writes_the_workspace_without_opening(tmp_path, tiny_model):
    target = tmp_path / "demo"
    proc = run_cli("demo", str(target), "--no-open")
    assert proc.returncode == 0, proc.stderr
    for sub in ("data", "configs", "runs", "models"):
        assert (target / sub).is_dir()
    model = target / "models" / "tiny-chat"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja",
                 "generation_config.json"):
        assert (model / name).is_file(), name
    # A second demo keeps the user's edits.
    note = target / "data" / "mine.txt"
    note.write_text("my notes")
    proc = run_cli("demo", str(target), "--no-open")
    assert proc.returncode == 0
    assert note.read_text() == "my notes"


def test_module_entry_point_matches_console_script():
    out = subprocess.run([sys.executable, "-m", "tuitune", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("tuitune ")


def test_the_tui_without_a_terminal_says_so_instead_of_waiting_unseen(workspace):
    """`tuitune > log` or a job with no terminal: the app could neither draw nor read keys and
    sat there at full CPU; now it is one line and exit 2 (the timeout fails the old behaviour)."""
    proc = run_cli("-w", workspace, timeout=60)
    assert_one_line_error(proc, "the TUI needs a terminal", f"tuitune -w {workspace}")
