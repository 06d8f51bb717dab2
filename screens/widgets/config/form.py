"""The Config step's form: one row a field of the run config's schema, by section.

The rows are derived from the schema (``tuitune.config.fields``), so a new setting
appears here without a line of UI code. :meth:`ConfigForm.validate` checks every row
and the whole config, marks each bad row with what to do, and says what Save may write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Checkbox, Input, Select, Static, TextArea

from screens.widgets.config.field import ConfigField
from tuitune.config import ERROR, RunConfig, check_files, describe, errors_of, flatten, unflatten
from tuitune.config.fields import field_specs


@dataclass
class Validated:
    """What the form holds, checked."""

    #: The config when every field is valid and its files exist (what Save writes), else None.
    cfg: RunConfig | None = None
    #: The config when the schema accepts it, files or not (the estimate, the checks), else None.
    schema_cfg: RunConfig | None = None
    #: Field name to its first error, in the form's order.
    errors: dict[str, str] = field(default_factory=dict)


class ConfigForm(VerticalScroll):
    """The schema's fields in sections; ``data()`` is what they hold (raw, not validated)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._fields: dict[str, ConfigField] | None = None

    def compose(self) -> ComposeResult:
        section = None
        for spec in field_specs():
            if spec.section != section:
                section = spec.section
                if section:
                    yield Static(f"{section} — {describe(section)}", classes="section-title")
            yield ConfigField(spec)

    def fields(self) -> list[ConfigField]:
        if self._fields is None:  # queried once: the form's rows never change
            self._fields = {f.field_name: f for f in self.query(ConfigField)}
        return list(self._fields.values())

    def field(self, name: str) -> ConfigField:
        self.fields()
        return self._fields[name]

    def has_field(self, name: str) -> bool:
        self.fields()
        return name in self._fields

    def data(self) -> dict:
        return unflatten({f.field_name: f.value for f in self.fields()})

    def fill(self, data: dict) -> None:
        """Put raw values (from YAML or a preset) into the inputs; missing keys get defaults."""
        flat = flatten(data)
        # Setting a value posts a Changed message; the caller re-validates once instead.
        with self.prevent(Input.Changed, Select.Changed, Checkbox.Changed, TextArea.Changed):
            for f in self.fields():
                spec = f.spec
                f.set_value(flat.get(spec.name, None if spec.optional else spec.default))

    def validate(self, workspace: Path) -> Validated:
        """Validate every row and the whole config (files relative to ``workspace``); mark each bad row."""
        errors: dict[str, str] = {}
        for f in self.fields():
            w = f.control
            if isinstance(w, Input):
                result = w.validate(w.value)
                if result is not None and not result.is_valid:
                    errors[f.field_name] = "; ".join(result.failure_descriptions)
        cfg = None
        try:
            cfg = RunConfig.model_validate(self.data()).with_context(workspace=workspace)
        except Exception as exc:  # pydantic ValidationError
            from pydantic import ValidationError

            if not isinstance(exc, ValidationError):
                raise
            for name, msg in errors_of(exc):
                if name in ("(top level)",):
                    name = "model"
                errors.setdefault(name if self.has_field(name) else "model", msg)
        schema_cfg = cfg if not errors else None
        if schema_cfg is not None:
            # Missing files are errors on their field, as `tuitune config check` reports them.
            for issue in check_files(schema_cfg):
                if issue.level == ERROR:
                    errors.setdefault(issue.field if self.has_field(issue.field) else "model", issue.message)
        for f in self.fields():
            f.show_error(errors.get(f.field_name))
        return Validated(cfg if not errors else None, schema_cfg, errors)
