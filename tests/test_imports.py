"""Startup stays light: the CLI and the TUI's modules never pull in the heavy ML stack."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "peft", "datasets", "bitsandbytes", "deepspeed", "accelerate", "lm_eval")


def _light_modules() -> list[str]:
    """Every step's screen and CLI verbs (from the step registry), and the engine's entry points."""
    from tuitune.steps import COMMANDS, STEPS

    return ["tuitune.cli", "screens.app", "tuitune.doctor", "tuitune.vram", "tuitune.workspace", "tuitune.merge",
            "tuitune.chat", "tuitune.config", "tuitune.data", "tuitune.sources", "tuitune.generation",
            "tuitune.train.launcher", "tuitune.train.runview", *[s.screen_module for s in STEPS],
            *[f"tuitune.commands.{v}" for v in COMMANDS]]


@pytest.mark.parametrize("module", _light_modules())
def test_import_leaves_heavy_modules_out(module):
    code = (f"import sys, {module}; heavy = {HEAVY!r}; "
            "print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {module} imported {out.stdout.strip()}"


def test_help_of_every_verb_leaves_heavy_modules_out():
    """`tuitune --help` and each verb's parser are built without importing torch & co."""
    code = (
        "import sys\n"
        "from tuitune.cli import build_parser\n"
        "p = build_parser()\n"
        "try:\n    p.parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage: tuitune" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="


def test_config_check_renders_the_prompts_without_torch(tmp_path, tiny_model):
    """`tuitune config check` (and the check `tuitune train` runs first) loads the model's tokenizer to
    render the evaluation prompts, and imports no torch for it (0.3 s against 4 to 5 s)."""
    import shutil

    from tuitune.config import get_preset, save_config

    shutil.copytree(tiny_model, tmp_path / "models" / "tiny-chat")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "self_cognition.jsonl").write_text(
        '{"conversation": [{"input": "Who are you?", "output": "Tiny."}]}\n', encoding="utf-8")
    save_config(get_preset("tiny-demo"), tmp_path / "tiny-demo.yaml")
    code = ("import sys\nfrom tuitune.cli import main\n"
            "try:\n    main(['config', 'check', 'tiny-demo.yaml'])\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "ok: tiny-demo.yaml" in out.stdout, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY=transformers", out.stdout


def test_engine_never_imports_textual():
    """The headless engine: importing every tuitune module leaves textual out."""
    code = (
        "import importlib, pkgutil, sys, tuitune\n"
        "for m in pkgutil.walk_packages(tuitune.__path__, 'tuitune.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print('textual' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_the_layering_contracts_hold_statically():
    """import-linter's contracts in pyproject.toml: the engine never imports screens or textual
    (but for the CLI's one way into the app); screens never import the heavy libraries directly.
    Static, so a lazy import inside a function that no test calls is caught too."""
    import shutil
    import subprocess

    from conftest import ROOT

    exe = shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency: pip install -e '.[test]'"
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout
