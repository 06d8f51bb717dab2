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


def _basename_clashes(root: Path) -> list[str]:
    """Modules under tuitune/ and screens/ that share a basename where a twin's docstring does
    not name the other ("Layer twin: ``path``"): one name must mean one thing (#21 item 7)."""
    by_name: dict[str, list[Path]] = {}
    for top in ("tuitune", "screens"):
        for p in sorted((root / top).rglob("*.py")):
            if p.name != "__init__.py":
                by_name.setdefault(p.name, []).append(p)
    bad = []
    for name, paths in by_name.items():
        for p in paths if len(paths) > 1 else ():
            doc = ast.get_docstring(ast.parse(p.read_text())) or ""
            for other in paths:
                rel = other.relative_to(root).as_posix()
                if other != p and f"Layer twin: ``{rel}``" not in doc:
                    bad.append(f"{p.relative_to(root).as_posix()} shares its name with {rel}")
    return bad


def test_no_two_modules_share_a_name_unless_they_say_they_are_one_thing_at_two_layers():
    assert _basename_clashes(ROOT) == []


def test_the_name_check_finds_a_clash(tmp_path):
    for d, doc in (("tuitune/train", "The figures."), ("screens/widgets", "The widget.")):
        (tmp_path / d).mkdir(parents=True)
        (tmp_path / d / "dashboard.py").write_text(f'"""{doc}"""\n')
    assert len(_basename_clashes(tmp_path)) == 2
    (tmp_path / "tuitune/train/dashboard.py").write_text('"""F.\n\nLayer twin: ``screens/widgets/dashboard.py``."""\n')
    (tmp_path / "screens/widgets/dashboard.py").write_text('"""W.\n\nLayer twin: ``tuitune/train/dashboard.py``."""\n')
    assert _basename_clashes(tmp_path) == []
