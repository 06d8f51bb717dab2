"""tuitune export --check-runtime: the exported GGUF run by llama.cpp, against tuitune chat (#25 section 2).

Here, cheap: without llama-cpp-python, one line and nothing written (the console script, typed in
a workspace); the Merge screen's Export dialog offers the check and shows its result line; the
Ollama Modelfile writes the BOS a named template trained with where the GGUF has none added
(SmolLM2's tokenizer). The real model after the shared LoRA run (the prompt llama.cpp renders from the GGUF is
the ids training used, f16 and q8_0 answers against tuitune chat, the Modelfile's TEMPLATE):
tests/test_real_model.py, on the exports it makes once.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import assert_one_line_error, run_cli

TUITUNE = shutil.which("tuitune")


# --- the Ollama Modelfile: the BOS training put first ---------------------------------------------------
# Ollama's prompt is computed as Ollama computes it by tests/test_template_parity.py's Go-template
# renderer (_ollama_prompt: the Modelfile's SYSTEM, .Messages collated, the TEMPLATE run).

#: One and three turns, each with and without a system prompt of its own; the last turn asks.
def conversations(records: list[dict], system: str = "You are a terse assistant.") -> list[list[dict]]:
    turns = [[{"role": "user", "content": r["conversation"][0]["input"]},
              {"role": "assistant", "content": r["conversation"][0]["output"]}] for r in records[:3]]
    one = turns[0][:1]
    three = [*turns[0], *turns[1], turns[2][0]]
    sys_ = [{"role": "system", "content": system}]
    return [one, three, sys_ + one, sys_ + three]


@pytest.mark.slow
@pytest.mark.parametrize("system", ["", "You are Tiny."])
def test_the_modelfile_writes_the_bos_a_named_template_trained_with(real_model, system):
    """SmolLM2 has a BOS (<|im_start|>) and its GGUF says the runtime adds none: a run with a named
    template trained with the BOS first, so the TEMPLATE writes it (Ollama's prompt tokenizes to
    the ids training encoded, one and three turns); where the GGUF has it added, the TEMPLATE does not."""
    from test_template_parity import _check_ollama
    from transformers import AutoTokenizer

    from tuitune.export import ollama_modelfile

    tok = AutoTokenizer.from_pretrained(real_model)
    for turns in (1, 3):
        mf = _check_ollama(tok, system, turns, "chatml")
        assert 'TEMPLATE """<|im_start|>{{- if .System }}<|im_start|>system' in mf
    assert 'TEMPLATE """{{- if .System }}' in ollama_modelfile(tok, "chatml", system, "m.gguf", bos_added=True)
    # SmolLM2's own template writes no BOS (its <|im_start|> opens the system turn): nothing added.
    assert 'TEMPLATE """{{- if .System }}' in _check_ollama(tok, system, 3, "auto")


# --- without llama-cpp-python ----------------------------------------------------------------------------

def _without_llama_cpp(tmp_path) -> dict:
    """An environment where `import llama_cpp` fails as it does where it is not installed: a package
    of that name first on the path, raising what Python raises for a missing module."""
    shadow = tmp_path / "no-llama-cpp" / "llama_cpp"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'llama_cpp'\", name='llama_cpp')\n")
    return {**__import__("os").environ, "PYTHONPATH": str(shadow.parent)}


@pytest.mark.skipif(TUITUNE is None, reason="the tuitune console script is not on PATH (pip install -e .)")
def test_check_runtime_without_llama_cpp_python_is_one_line(tmp_path):
    """Typed in a workspace with relative paths: exit 2, one line naming --check-runtime and how to
    install the runtime, before anything is converted or written (nothing under out/)."""
    assert subprocess.run([TUITUNE, "demo", "ws", "--no-open"], cwd=tmp_path, capture_output=True,
                          stdin=subprocess.DEVNULL).returncode == 0
    ws, env = tmp_path / "ws", _without_llama_cpp(tmp_path)
    for fmt, out in (("gguf", "out/tiny.gguf"), ("ollama", "out/tiny")):
        proc = subprocess.run([TUITUNE, "export", "models/tiny-chat", "--format", fmt, "-o", out,
                               "--check-runtime"], cwd=ws, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120)
        assert_one_line_error(proc, "--check-runtime needs llama-cpp-python", "pip install 'tuitune[runtime]'",
                              "or export without --check-runtime")
        assert not (ws / "out").exists() and not list(ws.rglob("*.partial-*"))


def test_without_check_runtime_nothing_needs_llama_cpp(tmp_path, tiny_model):
    """The runtime stays optional: an export that does not ask for the check never imports it (the
    tiny model's tokenizer then stops the export at llama.cpp's converter, past the point the check
    would have stopped it)."""
    proc = run_cli("export", tiny_model, "--format", "gguf", "-o", tmp_path / "t.gguf",
                   env=_without_llama_cpp(tmp_path), timeout=900)
    assert_one_line_error(proc, "converter cannot convert this model")


# --- the Merge screen's Export dialog -----------------------------------------------------------------------

async def test_the_export_dialog_asks_for_the_runtime_check():
    """Off by default; ticked, the request carries it; a format without a GGUF turns it off."""
    from textual.app import App

    from screens.widgets.merge.export_panel import ExportModal
    from tuitune.export import FORMATS, ExportFormat, register

    got = []

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(ExportModal("tiny", "tiny"), got.append)

    fmt = register(ExportFormat(name="folder", label="folder", kind="folder", output="{stem}-folder",
                                description="no GGUF", write=lambda job: None, gguf=False))
    try:
        app = Host()
        async with app.run_test(size=(100, 32)) as pilot:
            await pilot.pause()
            check = app.screen.query_one("#export-check-runtime")
            assert check.value is False and not check.disabled and "run in llama.cpp" in str(check.label)
            check.value = True
            app.screen.query_one("#export-format").value = "folder"
            await pilot.pause()
            assert check.disabled
            app.screen.query_one("#export-format").value = "gguf"
            await pilot.pause()
            assert not check.disabled
            await pilot.click("#export-go")
            await pilot.pause()
        assert got and got[0].check_runtime is True and got[0].fmt == "gguf"
    finally:
        FORMATS.pop(fmt.name)


async def test_the_merge_screen_says_the_runtime_is_missing(workspace, monkeypatch):
    """The same engine function from the screen (e, the check ticked, Export): without
    llama-cpp-python its line in the status, the check named by its label, nothing written."""
    from test_merge_screen import RUN, make_app, workspace_with_runs

    from conftest import widget_text

    monkeypatch.setitem(__import__("sys").modules, "llama_cpp", None)   # import llama_cpp: ImportError
    ws = workspace_with_runs(workspace)
    app = make_app(ws)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one("#export-check-runtime").value = True
        app.screen.query_one("#export-go").press()
        for _ in range(300):
            await pilot.pause(0.1)
            status = widget_text(app.screen.query_one("#merge-status"), width=10_000)
            if status.startswith("error:"):
                break
    assert status.startswith("error: run in llama.cpp needs llama-cpp-python"), status
    assert "pip install 'tuitune[runtime]'" in status and "export with it off" in status
    assert "--check-runtime" not in status
    assert not (ws / "models" / f"{RUN}-f16.gguf").exists() and not list((ws / "models").glob(".*partial*"))


# --- snapshots: the dialog with the check, and an export's result with its runtime line -------------------

RUNTIME = {"same": 4, "answers": [{}] * 5, "agreement": 0.97,
           "line": "runs in llama.cpp: same answers as tuitune chat on 4 of 5 prompts; 97% of answer tokens agree",
           "details": ["'Name three primary colors.' differs from answer token 9: tuitune ' blue', llama.cpp "
                       "' yellow'; logits of the two: tuitune 17.42 / 17.31, llama.cpp 17.36 / 17.39 (a near tie)"]}


async def _settled(pilot):
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


def _dialog(snap_compare, fixed_workspace, size) -> bool:
    from test_merge_screen import make_app, workspace_with_runs

    app = make_app(workspace_with_runs(fixed_workspace))

    async def opened(pilot):
        await _settled(pilot)
        await pilot.press("e")
        await _settled(pilot)
        app.screen.query_one("#export-check-runtime").value = True
        await _settled(pilot)

    return snap_compare(app, terminal_size=size, run_before=opened)


def test_snap_the_export_dialog_80x24(snap_compare, fixed_workspace):
    assert _dialog(snap_compare, fixed_workspace, (80, 24))


def test_snap_the_export_dialog_120x36(snap_compare, fixed_workspace):
    assert _dialog(snap_compare, fixed_workspace, (120, 36))


def _exported(snap_compare, fixed_workspace, size) -> bool:
    from test_merge_screen import RUN, make_app, workspace_with_runs

    from tuitune.export import ExportResult

    ws = workspace_with_runs(fixed_workspace)
    app = make_app(ws)

    async def finished(pilot):
        await _settled(pilot)
        out = ws / "models" / f"{RUN}-f16.gguf"
        result = ExportResult(out=out, gguf=out, bytes=270_900_000, outtype="f16", architecture="llama", tensors=272,
                              checks=["architecture llama (model_type llama)", "272 tensors (272 in the source)",
                                      "tokenizer gpt2", "chat template as trained"], seconds=41.3, merged=True,
                              command=f"llama-cli -m {out} -cnv", runtime=RUNTIME)
        app.screen.post_message(app.screen.Exported(result))
        await _settled(pilot)

    return snap_compare(app, terminal_size=size, run_before=finished)


def test_snap_an_export_checked_in_llama_cpp_80x24(snap_compare, fixed_workspace):
    assert _exported(snap_compare, fixed_workspace, (80, 24))


def test_snap_an_export_checked_in_llama_cpp_120x36(snap_compare, fixed_workspace):
    assert _exported(snap_compare, fixed_workspace, (120, 36))
