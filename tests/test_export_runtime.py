"""tuitune export --check-runtime: the exported GGUF run by llama.cpp, against tuitune chat (#25 section 2).

Here, cheap: without llama-cpp-python, one line and nothing written (the console script, typed in
a workspace); the Merge screen's Export dialog offers the check and shows its result line; the Go
template renderer the real tests read the Ollama Modelfile with, held to the tiny model's named
template. The real model after the shared LoRA run (the prompt llama.cpp renders from the GGUF is
the ids training used, f16 and q8_0 answers against tuitune chat, the Modelfile's TEMPLATE):
tests/test_real_model.py, on the exports it makes once.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from conftest import assert_one_line_error, run_cli

TUITUNE = shutil.which("tuitune")


# --- Ollama's Go templates, the subset a Modelfile's TEMPLATE uses ------------------------------------
# Written here: Ollama is not installed on the test machines, and no Python package renders Go's
# text/template. The subset: text; {{ .Field }}, {{ $.Field }}; if / else if / else / end; range over
# a list, with or without `$i, $_ :=`; eq; and the {{- / -}} markers that trim the whitespace beside.

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)


def _items(template: str) -> list[tuple]:
    items: list[tuple] = []
    pos, trim_next = 0, False
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        text = text.lstrip(" \t\r\n") if trim_next else text
        items.append(("text", text.rstrip(" \t\r\n") if m.group(1) else text))
        items.append(("act", m.group(2).strip()))
        pos, trim_next = m.end(), bool(m.group(3))
    items.append(("text", template[pos:].lstrip(" \t\r\n") if trim_next else template[pos:]))
    return items


def _parse(items, i=0):
    nodes = []
    while i < len(items):
        kind, body = items[i]
        word = body.split(" ", 1)[0] if kind == "act" else ""
        if kind == "text":
            nodes.append(("text", body))
        elif word in ("end", "else"):
            return nodes, i, body
        elif word == "if":
            branches, cond = [], body[3:]
            while True:
                sub, i, term = _parse(items, i + 1)
                branches.append((cond, sub))
                if term == "end":
                    break
                cond = term[len("else if "):] if term.startswith("else if ") else None
            nodes.append(("if", branches))
        elif word == "range":
            field = re.fullmatch(r"range\s+(?:\$\w+\s*,\s*\$\w+\s*:=\s*)?(\S+)", body).group(1)
            sub, i, term = _parse(items, i + 1)
            assert term == "end", term
            nodes.append(("range", field, sub))
        else:
            nodes.append(("expr", body))
        i += 1
    return nodes, i, None


def _value(expr: str, dot, root):
    args = re.findall(r'"(?:[^"\\]|\\.)*"|\S+', expr)
    if args[0] == "eq":
        return _value(args[1], dot, root) == _value(args[2], dot, root)
    a = args[0]
    if a.startswith('"'):
        return json.loads(a)
    if a == ".":
        return dot
    base, path = (root, a[2:]) if a.startswith("$.") else (dot, a[1:])
    for name in path.split("."):
        base = base.get(name) if isinstance(base, dict) else None
    return base


def _run(nodes, dot, root, out: list[str]) -> None:
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "expr":
            out.append(str(_value(node[1], dot, root) or ""))
        elif node[0] == "if":
            for cond, sub in node[1]:
                if cond is None or _value(cond, dot, root):
                    _run(sub, dot, root, out)
                    break
        else:
            for item in _value(node[1], dot, root) or []:
                _run(node[2], item, root, out)


def render_go(template: str, values: dict) -> str:
    """``template`` (Go's text/template, the subset above) executed on ``values``."""
    nodes, _, term = _parse(_items(template))
    assert term is None, f"an unmatched {{{{ {term} }}}}"
    out: list[str] = []
    _run(nodes, values, values, out)
    return "".join(out)


def ollama_values(messages: list[dict], system: str) -> dict:
    """What Ollama hands a TEMPLATE for a chat request: the Modelfile's SYSTEM as a first system
    message where the request has none; .System the system messages joined; .Messages with
    consecutive messages of one role joined by a blank line (server/prompt.go, template.collate)."""
    if system and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": system}, *messages]
    collated: list[dict] = []
    for m in messages:
        if collated and collated[-1]["Role"] == m["role"]:
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append({"Role": m["role"], "Content": m["content"]})
    return {"System": "\n\n".join(m["content"] for m in messages if m["role"] == "system"), "Messages": collated}


def read_modelfile(text: str) -> dict:
    """FROM, TEMPLATE, SYSTEM and the stops of a Modelfile as tuitune writes it."""
    fields = dict(re.findall(r'^(TEMPLATE|SYSTEM) """(.*?)"""$', text, re.S | re.M))
    return {"from": re.search(r"^FROM (.*)$", text, re.M).group(1), "template": fields["TEMPLATE"],
            "system": fields.get("SYSTEM", ""), "stops": [json.loads(s) for s in
                                                        re.findall(r"^PARAMETER stop (.*)$", text, re.M)]}


#: One and three turns, each with and without a system prompt of its own; the last turn asks.
def conversations(records: list[dict], system: str = "You are a terse assistant.") -> list[list[dict]]:
    turns = [[{"role": "user", "content": r["conversation"][0]["input"]},
              {"role": "assistant", "content": r["conversation"][0]["output"]}] for r in records[:3]]
    one = turns[0][:1]
    three = [*turns[0], *turns[1], turns[2][0]]
    sys_ = [{"role": "system", "content": system}]
    return [one, three, sys_ + one, sys_ + three]


def test_the_go_renderer_gives_the_named_templates_text(tiny_model):
    """The renderer holds to Go's rules where the Modelfile needs them: the Modelfile tuitune writes
    for the tiny model's ChatML renders as tuitune renders ChatML (newlines kept, the system first)."""
    from transformers import AutoTokenizer

    from tuitune.export import modelfile, ollama_template
    from tuitune.templates import render_prompt

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    go, _ = ollama_template(tok, "chatml")
    mf = read_modelfile(modelfile("m.gguf", go, ["<|im_end|>"], "You are Tiny."))
    assert mf["system"] == "You are Tiny." and mf["stops"] == ["<|im_end|>"] and mf["from"] == "./m.gguf"
    records = [{"conversation": [{"input": f"q{i}\nline two", "output": f"a{i}"}]} for i in range(3)]
    for conv in conversations(records):
        with_default = conv if conv[0]["role"] == "system" else [
            {"role": "system", "content": "You are Tiny."}, *conv]
        assert render_go(mf["template"], ollama_values(conv, mf["system"])) == render_prompt(
            tok, "chatml", with_default), conv
    assert render_go("{{- if .A }} a {{- else if .B -}} b {{ else }}c{{ end }}", {"B": 1}) == "b "
    assert render_go("{{ range $i, $_ := .M }}[{{ .X }}|{{ $.Y }}]{{ end }}", {"M": [{"X": 1}, {"X": 2}],
                                                                           "Y": "y"}) == "[1|y][2|y]"


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
