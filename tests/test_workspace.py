"""The workspace's listings (#21 item 6): models, tokenizers, configs and runs, in one place."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tuitune.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent


def test_each_listing_holds_what_it_says_by_name(tmp_path):
    ws = Workspace.at(tmp_path / "ws")
    assert (ws.model_dirs(), ws.tokenizer_dirs(), ws.config_files(), ws.run_folders(), ws.first_model()) \
        == ([], [], [], [], "")  # no folders yet: nothing, no error
    ws.ensure()
    for name, files in {"b-model": ["config.json", "tokenizer.json"], "a-model": ["config.json"],
                        "tok-only": ["tokenizer_config.json"], "adapter": ["adapter_config.json"],
                        ".hidden": ["config.json"]}.items():
        (ws.models / name).mkdir()
        for f in files:
            (ws.models / name / f).write_text("{}")
    (ws.models / "config.json").write_text("{}")  # a file, not a folder
    assert [p.name for p in ws.model_dirs()] == ["a-model", "b-model"]
    assert [p.name for p in ws.tokenizer_dirs()] == ["b-model", "tok-only"]
    assert ws.first_model() == "models/a-model"
    for name in ("b.yml", "a.yaml", "notes.json", ".c.yaml"):
        (ws.configs / name).write_text("x: 1\n")
    (ws.configs / "old.yaml").mkdir()
    assert [p.name for p in ws.config_files()] == ["a.yaml", "b.yml"]
    for run, created in (("older", 100.0), ("newer", 200.0)):
        (ws.runs / run).mkdir()
        (ws.runs / run / "config.yaml").write_text("x: 1\n")
        (ws.runs / run / "state.json").write_text(json.dumps({"created": created, "status": "finished"}))
    (ws.runs / "not-a-run").mkdir()
    assert [r.id for r in ws.run_folders()] == ["newer", "older"]
    assert ws.rel(ws.models / "a-model") == "models/a-model" and ws.rel(tmp_path) == str(tmp_path)


def test_no_screen_lists_workspace_folders_itself():
    """The screens ask the Workspace; a folder walk in screens/ (iterdir, glob) is a second listing."""
    found = []
    for path in sorted((ROOT / "screens").rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\.(iterdir|glob|rglob)\(", line) and ".tcss" not in line:
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []
