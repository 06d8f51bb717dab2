"""Generation settings, declared once: the model below is the settings' one definition.

Each field carries its default, its allowed range, a description, and (in
``json_schema_extra``) its label in the Chat settings panel, its input kind, its CLI
flag's metavar and the words a user may call it (``/set temp 0``). The CLI's
``--temperature ...`` flags (``add_arguments``), the REPL's ``/set`` and the Chat
settings panel are all derived from it, so a new setting or a changed range is written
here and nowhere else.

Values from Python are strict (``seed="7"`` is refused); text from a flag, ``/set`` or a
form field goes through :meth:`GenerationSettings.updated` / :func:`parse_setting`.
Every error is one line naming the setting and its allowed values.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuitune.errors import TuituneError

SEED_MAX = 2**32 - 1


def _setting(default, *, rule: str, label: str, kind: str, metavar: str, aliases: tuple[str, ...] = (),
             description: str, panel: bool = True, **constraints):
    extra = {"rule": rule, "label": label, "kind": kind, "metavar": metavar, "aliases": list(aliases), "panel": panel}
    return Field(default, description=description, json_schema_extra=extra, **constraints)


class GenerationSettings(BaseModel):
    """Generation controls. ``temperature`` 0 means greedy (top-p and top-k then do nothing)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    temperature: float = _setting(
        0.7, ge=0, allow_inf_nan=False, rule="0 or more (0 means greedy)", label="temperature", kind="number",
        metavar="T", aliases=("temp",),
        description="Sampling temperature. 0 is greedy: always the likeliest token.")
    top_p: float = _setting(
        0.9, gt=0, le=1, allow_inf_nan=False, rule="above 0 and at most 1", label="top-p", kind="number",
        metavar="P", description="Sample only from the likeliest tokens whose probabilities add up to this (0-1].")
    top_k: int = _setting(
        40, ge=0, rule="a whole number, 0 or more (0 turns it off)", label="top-k", kind="integer", metavar="K",
        description="Sample only from the K likeliest tokens; 0 turns it off.")
    repetition_penalty: float = _setting(
        1.0, gt=0, allow_inf_nan=False, rule="above 0 (1 turns it off)", label="rep. penalty", kind="number",
        metavar="R", aliases=("rep", "penalty", "repeat_penalty"),
        description="Above 1 discourages repeating tokens; 1 is off.")
    max_new_tokens: int = _setting(
        512, ge=1, rule="a whole number, 1 or more", label="max tokens", kind="integer", metavar="N",
        aliases=("max_tokens",), description="The longest answer, in tokens.")
    seed: Optional[int] = _setting(
        0, ge=0, le=SEED_MAX, rule=f"a whole number from 0 to {SEED_MAX}, or 'random'", label="seed", kind="seed",
        metavar="S", description="Set before every answer: the same seed, settings, model and prompt give the "
        "same answer. 'random' draws a new one each time (shown under the answer).")
    system: str = _setting(
        "", rule="text", label="system prompt", kind="text", metavar="TEXT",
        description="The system prompt, sent before the conversation (empty: none, or the run's when a run "
        "is loaded).")
    stop: tuple[str, ...] = _setting(
        (), rule="words separated by commas", label="stop words", kind="words", metavar="WORD", panel=False,
        description="End the answer at any of these words, on top of the template's stop words.")

    def __init__(self, **values):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise TuituneError(_one_line(exc)) from None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def validate(self) -> "GenerationSettings":  # noqa: D401 - kept for callers; fields validate on creation
        """The settings (every field was checked when they were made)."""
        return self

    def replace(self, **values) -> "GenerationSettings":
        """A validated copy with ``values`` set."""
        return GenerationSettings(**{**self.model_dump(), **values})

    def updated(self, name: str, value: Any) -> "GenerationSettings":
        """A validated copy with one field set; ``value`` may be text (from ``/set``, a flag or a form field)."""
        key = SETTING_ALIASES.get(name.strip().lower().replace("-", "_"))
        if key is None:
            raise TuituneError(f"unknown setting {name!r}; settings: {', '.join(SETTING_NAMES)}")
        return self.replace(**{key: parse_setting(key, value)})

    def to_dict(self) -> dict:
        d = self.model_dump()
        d["stop"] = list(self.stop)
        return d


FIELDS = GenerationSettings.model_fields
SETTING_NAMES = tuple(FIELDS)
SETTING_ALIASES = {**{n: n for n in SETTING_NAMES},
                   **{a: n for n, f in FIELDS.items() for a in f.json_schema_extra["aliases"]}}


#: The settings the Chat step's panel shows, in order (stop words are a flag and a ``/set`` only:
#: the template's own stop words already end an answer).
PANEL_FIELDS = tuple(n for n, f in FIELDS.items() if f.json_schema_extra["panel"])


def info(name: str) -> dict:
    """A setting's label, kind, rule, metavar and description."""
    f = FIELDS[name]
    return {**f.json_schema_extra, "description": f.description, "default": f.default}


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    name = str(err["loc"][0]) if err.get("loc") else "settings"
    if name not in FIELDS:
        return f"unknown setting {name!r}; settings: {', '.join(SETTING_NAMES)}"
    return f"{name} must be {FIELDS[name].json_schema_extra['rule']}, got {err.get('input')!r}"


def parse_setting(key: str, value: Any) -> Any:
    """Text → the field's type, with a one-line error naming the field; other values pass through."""
    if not isinstance(value, str):
        return value
    text, kind = value.strip(), FIELDS[key].json_schema_extra["kind"]
    rule = FIELDS[key].json_schema_extra["rule"]
    try:
        if kind == "number":
            return float(text)
        if kind == "integer":
            return int(text)
        if kind == "seed":
            return None if text.lower() in ("", "none", "random", "off") else int(text)
    except ValueError:
        raise TuituneError(f"{key} must be {rule}, got {value!r}") from None
    if kind == "words":
        return tuple(w for w in (s.strip() for s in text.split(",")) if w)
    return value


def add_arguments(group, names: tuple[str, ...] | None = None, defaults: dict | None = None) -> None:
    """The settings as argparse flags (``--top-p P``), each parsed and checked by the model itself.

    ``names``: only these settings; ``defaults``: other defaults than the declared ones (eval is greedy)."""
    import argparse

    def parser(name):
        def parse(text: str):
            try:
                return GenerationSettings().updated(name, text).__getattribute__(name)
            except TuituneError as exc:
                raise argparse.ArgumentTypeError(str(exc)) from None
        return parse

    defaults = defaults or {}
    for name, f in FIELDS.items():
        if names is not None and name not in names:
            continue
        x = f.json_schema_extra
        value = defaults.get(name, f.default)
        default = "random" if value is None else "none" if value == "" else value
        if x["kind"] == "words":
            group.add_argument(f"--{name}", action="append", default=[], metavar=x["metavar"],
                               help=f"{f.description} Repeatable.")
            continue
        group.add_argument(f"--{name.replace('_', '-')}", type=parser(name), default=value, metavar=x["metavar"],
                           help=f"{f.description} (default: {default})")


def from_arguments(args) -> GenerationSettings:
    """The settings the flags of :func:`add_arguments` gave (the declared defaults for the others)."""
    return GenerationSettings(**{name: (tuple(getattr(args, name)) if FIELDS[name].json_schema_extra["kind"] == "words"
                                        else getattr(args, name)) for name in FIELDS if hasattr(args, name)})


__all__ = ["GenerationSettings", "SETTING_NAMES", "SETTING_ALIASES", "FIELDS", "PANEL_FIELDS", "info", "parse_setting",
           "add_arguments", "from_arguments"]
