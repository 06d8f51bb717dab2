"""Shared set-up for the Train tests: a workspace with the tiny model, data and a config."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_workspace(root: Path, tiny_model: Path) -> Path:
    from tuitune.workspace import Workspace

    ws = Workspace.at(root).ensure()
    shutil.copytree(tiny_model, ws.models / "tiny-chat")
    shutil.copy(ROOT / "sample_data" / "self_cognition.jsonl", ws.data / "self_cognition.jsonl")
    return ws.root


def write_config(ws: Path, name: str = "quick", **overrides) -> Path:
    """The tiny-demo preset with ``overrides`` ({"training.max_steps": 10, ...}), saved to configs/."""
    from tuitune.config import get_preset, save_config
    from tuitune.config.schema import flatten, unflatten

    flat = flatten(get_preset("tiny-demo").model_dump(mode="json"))
    flat.update(overrides)
    from tuitune.config import RunConfig

    cfg = RunConfig.model_validate(unflatten(flat))
    path = ws / "configs" / f"{name}.yaml"
    save_config(cfg, path)
    return path


def events(run_dir: Path, type_: str | None = None) -> list[dict]:
    out = []
    p = Path(run_dir) / "events.jsonl"
    if p.exists():
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                e = json.loads(line)
                if type_ is None or e.get("type") == type_:
                    out.append(e)
    return out


def state(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "state.json").read_text())


def wait_until(pred, timeout: float = 240, what: str = "condition", every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
