"""No module imports another module's private name (issue 21 item 3; DESIGN.md's import rules).

Every module under ``tuitune/`` and ``screens/`` is read with ``ast``; each ``from tuitune.x import _y``,
``from screens.x import _y`` or relative ``from .x import _y`` that names a module other than the one
importing is an offender, inside functions too. A sibling in the same package counts: a name shared
between two modules is public (no underscore), or it lives in the one module that uses it.
``import a as _b`` and ``from m import public as _alias`` name nothing private and pass; dunders
(``__version__``) are public.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("tuitune", "screens")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The dotted module a ``from ... import`` names, relative imports resolved against ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def private_imports(root: Path = ROOT) -> list[str]:
    """``path:line: from M import _name`` for each private name imported across modules."""
    out = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module = _module_name(path, root)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom):
                    continue
                source = _absolute(node, module, path.name == "__init__.py")
                if source.split(".")[0] not in PACKAGES or source == module:
                    continue
                for alias in node.names:
                    name = alias.name
                    if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
                        out.append(f"{path.relative_to(root)}:{node.lineno}: from {source} import {name}")
    return out


def test_no_module_imports_another_module_s_private_name():
    offenders = private_imports()
    assert offenders == [], ("private names imported across modules (make the name public where it is "
                             "shared, or move it to the module that uses it):\n" + "\n".join(offenders))


def test_the_walk_finds_what_it_forbids(tmp_path):
    """The screen itself: a planted private import is found, absolute, relative and inside a function;
    a public alias and a module's import of its own name are not."""
    pkg = tmp_path / "tuitune" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "screens").mkdir()
    (tmp_path / "tuitune" / "__init__.py").write_text("__version__ = '1'\n")
    (pkg / "__init__.py").write_text("from tuitune.sub.a import _hidden\n")
    (pkg / "a.py").write_text("_hidden = 1\nfrom tuitune.sub.a import _hidden as again\n")
    (pkg / "b.py").write_text("from .a import _hidden\nfrom tuitune import __version__\n"
                              "from tuitune.sub.a import visible as _alias\n"
                              "def f():\n    from tuitune.sub.a import _hidden\n")
    assert private_imports(tmp_path) == [
        "tuitune/sub/__init__.py:1: from tuitune.sub.a import _hidden",
        "tuitune/sub/b.py:1: from tuitune.sub.a import _hidden",
        "tuitune/sub/b.py:5: from tuitune.sub.a import _hidden",
    ]
