"""One row of the Config form: a label, the input that suits the field, and its error line."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.validation import ValidationResult, Validator
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select, Static, TextArea

from screens.widgets.controls import NUMBER_RESTRICT, Toggle
from tuitune.config.fields import FieldSpec, from_text, to_text, validate_field


class SchemaValidator(Validator):
    """Textual validation backed by the pydantic schema of one field."""

    def __init__(self, name: str):
        super().__init__()
        self.field_name = name

    def validate(self, value: str) -> ValidationResult:
        msg = validate_field(self.field_name, value)
        return self.success() if msg is None else self.failure(msg)


#: The label column (its last cell a space). A longer key wraps after an underscore (see
#: :func:`label_text`), never mid-word ("gradient_checkpoi / nting"); a wider column would cut
#: the values at 100 columns ("data/self_cognition.js").
LABEL_WIDTH = 18


def label_text(key: str, width: int = LABEL_WIDTH - 1) -> str:
    """``key`` on lines of at most ``width`` cells, broken after an underscore (between its words):
    ``gradient_checkpointing`` → ``gradient_`` / ``checkpointing``. Textual wraps at spaces only."""
    if len(key) <= width:
        return key
    lines = [""]
    for word in key.replace("_", "_\n").split("\n"):
        if lines[-1] and len(lines[-1]) + len(word) > width:
            lines.append("")
        lines[-1] += word
    return "\n".join(lines)


def control_id(name: str) -> str:
    return "f-" + name.replace(".", "-").replace("_", "-")


class ConfigField(Vertical):
    """A form row for one schema field. ``value`` is the field's Python value (unvalidated)."""

    DEFAULT_CSS = f"""
    ConfigField {{ height: auto; }}
    ConfigField > Horizontal {{ height: auto; }}
    ConfigField .cfg-label {{ width: {LABEL_WIDTH}; padding: 0 1 0 0; color: $text-muted; }}
    ConfigField .cfg-control {{ width: 1fr; }}
    ConfigField TextArea.cfg-control {{ height: 3; }}
    ConfigField .cfg-error {{ color: $error; padding: 0 0 0 {LABEL_WIDTH}; display: none; }}
    ConfigField.-invalid .cfg-error {{ display: block; }}
    ConfigField.-invalid .cfg-label {{ color: $error; }}
    """

    def __init__(self, spec: FieldSpec, value: Any = None):
        super().__init__(id="row-" + control_id(spec.name)[2:])
        self.spec = spec
        self._initial = spec.default if value is None and not spec.optional else value

    @property
    def field_name(self) -> str:
        return self.spec.name

    def compose(self) -> ComposeResult:
        s = self.spec
        with Horizontal():
            yield Label(label_text(s.key), classes="cfg-label")
            yield self._make_control()
        yield Static("", classes="cfg-error")

    def _make_control(self) -> Widget:
        s, cid = self.spec, control_id(self.spec.name)
        if s.kind == "bool":
            w: Widget = Toggle("", bool(self._initial), id=cid, compact=True)
        elif s.kind == "choice":
            w = Select([(str(c), c) for c in s.choices], value=self._initial, allow_blank=False, id=cid,
                       compact=True)
        elif s.kind == "lines":
            w = TextArea(to_text(s.name, self._initial), id=cid, compact=True, show_line_numbers=False,
                         soft_wrap=True)
        else:
            placeholder = "empty: none" if s.optional else ""
            # A number field takes digits (and sign, point, exponent) only: no `_`, no stray letters.
            w = Input(to_text(s.name, self._initial), id=cid, compact=True, placeholder=placeholder,
                      validators=[SchemaValidator(s.name)],
                      restrict=NUMBER_RESTRICT["number"] if s.numeric else None)
        w.add_class("cfg-control")
        w.tooltip = f"{s.name}: {s.description}"
        w.field_name = s.name  # type: ignore[attr-defined]
        w.field_label = s.name  # type: ignore[attr-defined]  # F1 and errors say "training.lr", not the id
        self._control = w
        return w

    @property
    def control(self) -> Widget:
        return self._control

    @property
    def value(self) -> Any:
        w = self.control
        if isinstance(w, Checkbox):
            return bool(w.value)
        if isinstance(w, Select):
            return w.value
        if isinstance(w, TextArea):
            return from_text(self.spec.name, w.text)
        return from_text(self.spec.name, w.value)

    def set_value(self, value: Any) -> None:
        w = self.control
        if isinstance(w, Checkbox):
            w.value = bool(value)
        elif isinstance(w, Select):
            if value in self.spec.choices:
                w.value = value
        elif isinstance(w, TextArea):
            w.text = to_text(self.spec.name, value if value is not None else [])
        else:
            w.value = to_text(self.spec.name, value)
            w.cursor_position = 0  # show the start of a long path, not its tail

    _error: str | None = None

    def show_error(self, message: str | None) -> None:
        if message == self._error:  # no re-layout on every keystroke
            return
        self._error = message
        self.set_class(bool(message), "-invalid")
        self.query_one(".cfg-error", Static).update(f"↑ {message}" if message else "")
