"""The bench scripts still reach the engine: every ``from tuitune... import NAME`` in ``bench/`` (at the
top or inside a function, where most of them import) names a module and a name that exist.

A bench runs by hand, alone on a quiet box, so nothing else would notice a name it imports moving
(``tuitune.config.hardware`` became ``tuitune.hardware`` and bench/cores.py failed at its first line).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _engine_imports():
    for script in sorted(BENCH.glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tuitune":
                for alias in node.names:
                    yield pytest.param(node.module, alias.name, id=f"{script.name}:{node.lineno}:{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "tuitune":
                        yield pytest.param(alias.name, None, id=f"{script.name}:{node.lineno}:{alias.name}")


@pytest.mark.parametrize("module, name", list(_engine_imports()))
def test_each_engine_name_a_bench_imports_exists(module, name):
    mod = importlib.import_module(module)
    if name is not None and not hasattr(mod, name):
        importlib.import_module(f"{module}.{name}")  # a submodule: ImportError names it
