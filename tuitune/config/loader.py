"""Reading and writing run configs: safe YAML only, errors that name the field and line."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tuitune.config.schema import SECTIONS, RunConfig, describe, field_info, iter_fields
from tuitune.errors import TuituneError
from tuitune.fsutil import atomic_write_text

# Tags ``yaml.SafeLoader`` constructs: plain data only. Anything else (``!!python/object``,
# ``!!python/name`` ...) is refused before construction, with the field it sits under.
_SAFE_TAGS = {f"tag:yaml.org,2002:{t}" for t in
              ("str", "int", "float", "bool", "null", "map", "seq", "timestamp", "binary", "set", "omap", "pairs",
               "merge", "value")}


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader we drive in two phases: compose the node tree, then construct.

    ``yaml.safe_load`` returns plain dicts that have forgotten where each key was. We
    compose the node tree first (each node keeps its ``start_mark``), record the line of
    every key path, refuse any non-data tag with its line, and only then construct the
    Python values from the same tree with SafeLoader's constructors. Nothing is executed
    and nothing but plain data is built: this is ``safe_load`` with line numbers.
    """


def _walk(node: yaml.Node, path: tuple, lines: dict, where: Path) -> None:
    if node.tag not in _SAFE_TAGS:
        field = ".".join(map(str, path)) or "(top level)"
        raise TuituneError(
            f"{where}: line {node.start_mark.line + 1}: {field}: the YAML tag {node.tag.replace('tag:yaml.org,2002:', '!!')} "
            "would construct a Python object; tuitune configs are plain data and are never executed, "
            "so remove the tag and write a plain value")
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
            sub = path + (k,)
            lines.setdefault(sub, key.start_mark.line + 1)
            _walk(value, sub, lines, where)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = path + (i,)
            lines.setdefault(sub, item.start_mark.line + 1)
            _walk(item, sub, lines, where)


def parse_yaml(text: str, where: str | Path = "<config>") -> tuple[Any, dict]:
    """Safely parse YAML text: (data, {key path tuple: line}). Raises TuituneError."""
    where = Path(where)
    loader = _LineLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f"line {mark.line + 1}: " if mark else ""
            problem = exc.problem or exc.context or "invalid YAML"
            raise TuituneError(f"{where}: {line}YAML syntax error: {problem}; check the indentation "
                               "(spaces, not tabs) and quote values containing ': ' or '#'") from None
        except yaml.YAMLError as exc:
            raise TuituneError(f"{where}: YAML syntax error: {exc}") from None
        if node is None:
            return None, {}
        lines: dict = {}
        _walk(node, (), lines, where)
        try:
            data = loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:  # e.g. a malformed !!timestamp
            mark = exc.problem_mark
            raise TuituneError(f"{where}: line {mark.line + 1 if mark else '?'}: {exc.problem}; "
                               "write a plain value") from None
    finally:
        loader.dispose()
    return data, lines


# --- pydantic errors, said for a user ---------------------------------------------------------

def _suggest(key: str, options) -> str:
    key = str(key)
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.5)
    if not close:  # 'lrate' -> 'lr', 'train_file' -> 'train': one contains the other
        close = [o for o in options if len(o) >= 2 and (key.startswith(o) or o.startswith(key))][:1]
    return f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(options)}"


def _constraint_text(info) -> str:
    parts = []
    for m in info.metadata:
        for attr, word in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            v = getattr(m, attr, None)
            if v is not None:
                parts.append(f"{word} {v}")
    return " and ".join(parts)


def _default_text(info) -> str:
    if info.default_factory is not None:
        return repr(info.default_factory())
    return repr(info.default)


def explain_error(err: dict) -> tuple[str, str]:
    """One pydantic error -> (dotted field, 'what is wrong; what to do')."""
    loc = tuple(str(p) for p in err.get("loc", ()))
    typ = err.get("type", "")
    # For unions pydantic appends the member tried (e.g. 'list[str]'); keep the field path.
    names = [p for p in loc if not (p.startswith(("list[", "literal[", "function-")) or p.isdigit())]
    field = ".".join(names) or "(top level)"
    got = err.get("input")
    if typ == "extra_forbidden":
        parent = ".".join(names[:-1])
        key = names[-1] if names else "?"
        model = SECTIONS.get(parent, RunConfig if not parent else None)
        options = list(model.model_fields) if model else []
        where = f"section {parent!r}" if parent else "the top level"
        return field, f"unknown key {key!r} in {where}; {_suggest(key, options)}"
    if typ == "missing":
        return field, f"missing; add `{names[-1]}:` ({describe(field) if _known(field) else 'required'})"
    try:
        info = field_info(field)
    except KeyError:
        info = None
    msg = err.get("msg", "invalid value")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and info is not None:
        return field, f"{got!r} is out of range; it must be {_constraint_text(info)} (default {_default_text(info)})"
    if typ in ("literal_error", "enum"):
        return field, f"{got!r} is not allowed; {msg[0].lower() + msg[1:]}"
    if typ.endswith("_parsing") or typ.endswith("_type"):
        default = f" such as {_default_text(info)}" if info is not None else ""
        return field, f"wrong type: {got!r} ({msg[0].lower() + msg[1:]}); write a value{default}"
    return field, msg[0].lower() + msg[1:] if msg else "invalid value"


def _known(field: str) -> bool:
    try:
        describe(field)
        return True
    except KeyError:
        return False


def errors_of(exc: ValidationError) -> list[tuple[str, str]]:
    """All errors of a validation as (field, message)."""
    seen, out = set(), []
    for e in exc.errors(include_url=False):
        field, msg = explain_error(e)
        if (field, msg) not in seen:
            seen.add((field, msg))
            out.append((field, msg))
    return out


def _line(lines: dict, field: str) -> int | None:
    parts = tuple(field.split(".")) if field and field != "(top level)" else ()
    while parts:
        if parts in lines:
            return lines[parts]
        parts = parts[:-1]
    return None


def _fmt(where, lines: dict, field: str, msg: str) -> str:
    line = _line(lines, field)
    at = f"line {line}: " if line else ""
    return f"{where}: {at}{field}: {msg}"


# --- public ------------------------------------------------------------------------------------

def default_workspace_for(path: Path) -> Path:
    """A config in ``<ws>/configs/`` belongs to ``<ws>``; any other file to the current folder."""
    path = path.resolve()
    if path.parent.name == "configs":
        return path.parent.parent
    return Path.cwd()


def config_from_data(data: Any, *, workspace: str | Path | None = None, where: str | Path = "<config>",
                     lines: dict | None = None) -> RunConfig:
    """Validate parsed YAML data into a RunConfig; TuituneError names the first bad field and line."""
    lines = lines or {}
    if data is None:
        raise TuituneError(f"{where}: the file is empty; start from a preset: "
                           "`tuitune config new --preset tiny-demo -o FILE`")
    if not isinstance(data, dict):
        raise TuituneError(f"{where}: line 1: the top level must be a mapping of keys "
                           f"(model:, method:, training: ...), not a {type(data).__name__}")
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        field, msg = errors_of(exc)[0]
        raise TuituneError(_fmt(where, lines, field, msg)) from None
    ws = Path(workspace) if workspace is not None else Path.cwd()
    return cfg.with_context(workspace=ws, source=Path(where) if str(where) != "<config>" else None, lines=lines)


def loads_config(text: str, *, workspace: str | Path | None = None, where: str | Path = "<config>") -> RunConfig:
    data, lines = parse_yaml(text, where)
    return config_from_data(data, workspace=workspace, where=where, lines=lines)


def load_config(path: str | Path, workspace: str | Path | None = None) -> RunConfig:
    """Load and validate a run config file.

    ``workspace`` is where relative paths resolve; by default the folder holding
    ``configs/`` when the file is in one, else the current folder. Raises
    TuituneError naming the file, field and YAML line for any bad input.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TuituneError(f"{path}: no such config file; create one with "
                           "`tuitune config new --preset tiny-demo -o FILE` (see `tuitune config list`)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TuituneError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    ws = Path(workspace) if workspace is not None else default_workspace_for(path)
    return loads_config(text, workspace=ws, where=path)


def _scalar_yaml(key: str, value: Any) -> list[str]:
    text = yaml.safe_dump({key: value}, allow_unicode=True, sort_keys=False, default_flow_style=False,
                          width=4096)
    return text.rstrip("\n").split("\n")


def dump_config(cfg: RunConfig | dict) -> str:
    """The YAML text of a config: every field, each with its description as a comment above."""
    data = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    out = ["# tuitune run config. Check it with `tuitune config check FILE`; "
           "every field is described in `tuitune config show FILE`.",
           "# Relative paths are in the workspace (the folder holding configs/)."]
    for name in RunConfig.model_fields:
        if name not in data:
            continue
        value = data[name]
        if name in SECTIONS:
            out.append("")
            out.append(f"# {describe(name)}")
            out.append(f"{name}:")
            for sub, v in value.items():
                if _known(f"{name}.{sub}"):
                    out.append(f"  # {describe(name + '.' + sub)}")
                out.extend("  " + line for line in _scalar_yaml(sub, v))
        else:
            out.append(f"# {describe(name)}")
            out.extend(_scalar_yaml(name, value))
    return "\n".join(out) + "\n"


def save_config(cfg: RunConfig, path: str | Path, force: bool = True) -> Path:
    """Write ``cfg`` as commented YAML, atomically (the old file or the new one, never half).

    ``force=False`` refuses an existing file (``config new`` without ``--force``; a TUI asks
    first). Saving the file being edited is an overwrite by intent, hence the default.
    """
    from tuitune.fsutil import refuse_existing

    path = Path(path).expanduser()
    refuse_existing(path, force)
    return atomic_write_text(path, dump_config(cfg))


def all_fields() -> list[str]:
    return [name for name, _ in iter_fields()]
