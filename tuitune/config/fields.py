"""Field by field, for a form: what kind of input each field takes, text <-> value, and
validating one field's text against the schema (the Config screen validates as you type)."""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import TypeAdapter, ValidationError

from tuitune.config.loader import explain_error
from tuitune.config.schema import iter_fields

#: Fields edited as several lines of text (one item a line): free text, where a comma may be part of
#: an item (a prompt, a URL's query ``?tags=a,b``), so a comma-separated list cannot hold them.
LINES_FIELDS = ("evaluation.prompts", "notify.urls")
#: The training data: one file, or a mix written ``a.jsonl; b.jsonl weight=2 max_records=500``.
MIX_FIELDS = ("data.train",)
MIX_SEP = ";"
#: GRPO's rewards: one a line, ``regex weight=0.5 pattern='#### -?\d+'`` (RewardSpec.line).
REWARD_FIELDS = ("grpo.rewards",)


@dataclass(frozen=True)
class FieldSpec:
    name: str                   # dotted
    kind: str                   # bool | choice | text | list | lines
    description: str
    default: Any
    optional: bool = False      # empty text means null
    choices: tuple = ()         # for kind choice
    numeric: bool = False

    @property
    def section(self) -> str:
        return self.name.split(".")[0] if "." in self.name else ""

    @property
    def key(self) -> str:
        return self.name.split(".")[-1]


def _literal_args(ann) -> tuple | None:
    if typing.get_origin(ann) is Literal:
        return typing.get_args(ann)
    return None


def _spec(name: str, info) -> FieldSpec:
    ann = info.annotation
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    optional = False
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        optional = True
        rest = [a for a in args if a is not type(None)]
        ann = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]
    default = info.default_factory() if info.default_factory is not None else info.default
    desc = info.description or ""
    if name in LINES_FIELDS or name in REWARD_FIELDS:
        return FieldSpec(name, "lines", desc, default, optional)
    if name in MIX_FIELDS:
        return FieldSpec(name, "mix", desc, default, optional)
    if ann is bool:
        return FieldSpec(name, "bool", desc, default, optional)
    lit = _literal_args(ann)
    if lit is not None:
        return FieldSpec(name, "choice", desc, default, optional, choices=lit)
    if typing.get_origin(ann) is list or (typing.get_origin(ann) in (typing.Union, types.UnionType)
                                          and any(typing.get_origin(a) is list for a in typing.get_args(ann))):
        return FieldSpec(name, "list", desc, default, optional)
    return FieldSpec(name, "text", desc, default, optional, numeric=ann in (int, float))


@functools.lru_cache(maxsize=1)
def field_specs() -> tuple[FieldSpec, ...]:
    """Every leaf field of the schema, in file order."""
    return tuple(_spec(name, info) for name, info in iter_fields())


def spec(name: str) -> FieldSpec:
    for s in field_specs():
        if s.name == name:
            return s
    raise KeyError(name)


def to_text(name: str, value: Any) -> str:
    """A field value as the text an input shows."""
    s = spec(name)
    if value is None:
        return ""
    if name in REWARD_FIELDS:
        from tuitune.config.schema_grpo import RewardSpec

        return "\n".join(r if isinstance(r, str) else (r if isinstance(r, RewardSpec) else RewardSpec.model_validate(r))
                         .line() for r in value)
    if s.kind == "lines":
        return "\n".join(value)
    if s.kind == "mix":
        items = value if isinstance(value, list) else [value]
        return f"{MIX_SEP} ".join(i if isinstance(i, str) else _source(i).line() for i in items)
    if s.kind == "list":
        return value if isinstance(value, str) else ", ".join(value)
    if isinstance(value, float):
        return repr(value) if abs(value) >= 1e-4 or value == 0 else f"{value:g}"
    return str(value)


def from_text(name: str, text: str) -> Any:
    """The value an input's text stands for (not yet validated)."""
    s = spec(name)
    text = text if s.kind == "lines" else text.strip()
    if s.kind == "lines":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if text == "" and s.optional:
        return None
    if s.kind == "mix":
        try:
            return parse_mix(text)
        except ValueError:
            return text   # not a mix the parser takes: validate_field says why
    if s.kind == "list":
        if name == "lora.target_modules" and text == "all-linear":
            return text
        return [p.strip() for p in text.split(",") if p.strip()]
    return text


def parse_mix(text: str):
    """``a.jsonl; b.jsonl weight=2 max_records=500`` → the value of data.train (one bare path: a string);
    ValueError naming the entry that does not parse."""
    from tuitune.config.schema import DataSource

    items = [p.strip() for p in text.split(MIX_SEP) if p.strip()]
    if not items:
        return ""
    if len(items) == 1 and len(items[0].split()) == 1:
        return items[0]
    parsed = []
    for i, item in enumerate(items, 1):
        try:
            src = DataSource.parse_line(item)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            raise ValueError(f"entry {i} ({item.split()[0]}): {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
        except ValueError as exc:
            raise ValueError(f"entry {i}: {exc}") from None
        parsed.append(src if isinstance(src, str) else src.model_dump(exclude_none=True))
    return parsed


def _source(item):
    from tuitune.config.schema import DataSource

    return item if isinstance(item, DataSource) else DataSource.model_validate(item)


@functools.lru_cache(maxsize=None)
def _adapter(name: str) -> TypeAdapter:
    info = dict(iter_fields())[name]
    ann = info.annotation
    if info.metadata:
        ann = Annotated[(ann, *info.metadata)]
    return TypeAdapter(ann)


def validate_field(name: str, text: str) -> str | None:
    """None when ``text`` is a valid value for field ``name``, else what is wrong and what to do."""
    if name in REWARD_FIELDS:
        from tuitune.config.schema_grpo import GrpoConfig

        try:
            GrpoConfig.model_validate({"rewards": from_text(name, text)})
        except ValidationError as exc:
            err = dict(exc.errors(include_url=False)[0])
            err["loc"] = ("grpo", *err.get("loc", ()))
            return explain_error(err)[1]
        return None
    if spec(name).kind == "mix":
        if not text.strip():
            return "required; give a data file (or several: a.jsonl; b.jsonl weight=2)"
        try:
            parse_mix(text)
        except ValueError as exc:
            return f"{exc}; write files as a.jsonl; b.jsonl weight=2 max_records=500"
    value = from_text(name, text)
    if value is None and not spec(name).optional:
        return "required; type a value"
    try:
        _adapter(name).validate_python(value)
    except ValidationError as exc:
        err = dict(exc.errors(include_url=False)[0])
        err["loc"] = tuple(name.split(".")) + tuple(err.get("loc", ()))
        return explain_error(err)[1]
    if name == "lora.target_modules" and value == []:
        return "list at least one layer name (comma-separated), or write all-linear"
    if name == "template":
        # The template list lives in tuitune.templates; the model validator knows it.
        from tuitune.config.schema import RunConfig
        try:
            RunConfig._known_template(value)
        except ValueError as exc:
            return str(exc)
    return None


__all__ = ["FieldSpec", "field_specs", "spec", "to_text", "from_text", "validate_field"]
