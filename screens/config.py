"""Step 3, Config: a form over the run config's schema that lets no bad value through.

Layer twin: ``tuitune/commands/config.py`` is the same step's CLI verb (one name, two layers).

Every input validates as you type (Textual validators backed by the pydantic schema);
the whole config is re-validated on each change, and Save stays disabled until it is
valid. The side panel shows help for the focused field, the VRAM estimate for the
current method / max length / batch, the diff against the preset, and the checks.
All the logic is in ``tuitune.config``; this screen only gathers input and shows.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from rich.markup import escape
from textual import on
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.containers import Horizontal
from textual.events import DescendantFocus
from textual.widgets import Button, Checkbox, Input, Select, Static, TextArea

from screens.base import StepScreen
from screens.widgets.choice import ChoiceScreen, PathScreen, overwrite_choices
from screens.widgets.config.field import ConfigField
from screens.widgets.config.form import ConfigForm
from screens.widgets.config.side import ConfigSide, put_markup
from screens.widgets.config.source import DEFAULT_PRESET, SourceSelect, file_key
from tuitune.config import (RunConfig, config_from_data, dump_config, flatten, get_preset, parse_yaml, save_config,
                            summary)
from tuitune.errors import TuituneError
from tuitune.fsutil import atomic_write_text, next_free_path

#: Fields whose change alters the VRAM estimate.
VRAM_FIELDS = {"model", "method", "data.max_length", "training.batch_size", "training.gradient_checkpointing",
               "lora.r", "lora.target_modules", "distributed.gpus", "distributed.deepspeed", "training.precision"}
#: Fields the machine checks look at (GPUs, bitsandbytes, DeepSpeed, the tokenizer and template).
CHECK_FIELDS = {"model", "template", "method", "trust_remote_code", "quantization.compute_dtype",
                "training.precision", "training.kernels", "distributed.gpus", "distributed.nnodes",
                "distributed.master_addr", "distributed.deepspeed", "evaluation.prompts", "data.system"}


class ConfigScreen(StepScreen):
    # Below 100 columns a field's label sits above its value, so the value gets the form's whole
    # width and reads whole ("models/tiny-chat", not "models/tiny-cha"), and so does the label.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    STEP = "config"
    HELP = """\
# Config

One YAML file per run, checked against a schema and never executed. Pick a **preset**
or a saved config at the top, edit the fields (each is checked as you type; a bad value
is marked with what to do), then **save** it to `configs/`.

The side panel shows help for the focused field, the **VRAM estimate** for the current
method, max length and batch, the **diff** against the preset, and the **checks** of
files and this machine (GPUs, bitsandbytes, DeepSpeed, the template).

`ctrl+o` opens the file in `$EDITOR`; when you close the editor it is checked again.

`ctrl+t` **probes** the saved config: a few optimizer steps on the longest batch of its
data, on this machine. It says whether it fits (the peak memory measured beside the
estimate), when the whole run would end, and, where it does not fit, the first change
of the ladder that does (`w` writes it as a new config). Esc cancels a probe.
The same from a shell: `tuitune config list | new | check | show`, `tuitune train CONFIG --probe`.
"""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="config-save"),
        Binding("ctrl+o", "edit", "$EDITOR", id="config-edit"),
        Binding("ctrl+r", "check", "Check", id="config-check"),
        Binding("ctrl+l", "focus_source", "Load", id="config-load"),
        Binding("ctrl+t", "probe", "Probe", id="config-probe",
                tooltip="Measure the saved config on this machine: fits? ETA? (a few steps)"),
    ]

    def __init__(self):
        super().__init__()
        #: The form's config when every field is valid and its files exist (what Save writes).
        self.cfg: RunConfig | None = None
        #: The form's config when the schema accepts it, files or not (estimate, checks).
        self.schema_cfg: RunConfig | None = None
        #: The file the form was loaded from or last saved to (None: a preset, a new file).
        self.loaded_path: Path | None = None
        self._source_key: str | None = None
        self.load_error: str | None = None
        self._loaded_data: dict | None = None

    # --- layout -------------------------------------------------------------------------
    def compose_body(self) -> ComposeResult:
        with Horizontal(id="cfg-top"):
            yield SourceSelect(self.workspace, id="cfg-source")
            yield Input("", id="cfg-file", compact=True, placeholder="configs/NAME.yaml",
                        tooltip="The file Save writes, in the workspace's configs/ folder.")
            yield Button("Save", id="cfg-save", compact=True, disabled=True, variant="primary",
                         tooltip="Save the config (ctrl+s); disabled while a field is invalid.")
        yield Static("", id="cfg-status")
        with Horizontal(id="cfg-main"):
            yield ConfigForm(id="cfg-form")
            yield ConfigSide(id="cfg-side")

    def on_mount(self) -> None:
        self.load_source(self.query_one("#cfg-source", Select).value)
        self.query_one("#cfg-source").focus()
        self.query_one("#cfg-file", Input).field_label = "File"  # type: ignore[attr-defined]

    @property
    def form(self) -> ConfigForm:
        return self.query_one(ConfigForm)

    @property
    def side(self) -> ConfigSide:
        return self.query_one(ConfigSide)

    # --- loading into the form --------------------------------------------------------------
    def fields(self) -> list[ConfigField]:
        return self.form.fields()

    def form_data(self) -> dict:
        return self.form.data()

    def load_source(self, key: str) -> None:
        self.load_error = None
        self.side.forget_checks()  # a loaded config is always checked again
        self._source_key = key
        self.query_one(SourceSelect).show(key)
        if key.startswith("preset:"):
            # A preset is a new, unnamed file: Save asks where (never over the file loaded before).
            name = key.split(":", 1)[1]
            self.form.fill(get_preset(name).model_dump(mode="json"))
            self.query_one("#cfg-file", Input).value = ""
            self.loaded_path = None
        else:
            path = Path(key.split(":", 1)[1])
            self.load_file(path)
        self._loaded_data = self.form_data()
        self.call_after_refresh(self.revalidate)

    def load_file(self, path: Path) -> None:
        """Load a YAML file into the form. A bad file still fills what it can; its error shows."""
        rel = path.relative_to(self.workspace.root) if path.is_relative_to(self.workspace.root) else path
        self.query_one("#cfg-file", Input).value = str(rel)
        self.loaded_path = path
        try:
            data, lines = parse_yaml(path.read_text(encoding="utf-8"), rel)
        except (OSError, UnicodeDecodeError) as exc:
            self.load_error = f"{rel}: cannot read: {exc}"
            return
        except TuituneError as exc:
            self.load_error = str(exc)
            return
        if isinstance(data, dict):
            self.form.fill(data)
        try:
            config_from_data(data, workspace=self.workspace.root, where=rel, lines=lines)
        except TuituneError as exc:
            self.load_error = str(exc)

    # --- validation -------------------------------------------------------------------------
    def revalidate(self) -> None:
        """Validate the whole form; mark each bad field; enable Save only when all is valid."""
        checked = self.form.validate(self.workspace.root)
        self.cfg, self.schema_cfg = checked.cfg, checked.schema_cfg
        self.query_one("#cfg-save", Button).disabled = self.cfg is None or not self._file_ok()
        self._show_status(checked.errors)
        side = self.side
        side.show_diff(self.schema_cfg)
        if self.schema_cfg is not None:  # again only when a field the machine checks look at changed
            side.check_machine(self.schema_cfg, self._key(CHECK_FIELDS))
        side.show_checks(self.schema_cfg)
        if self.schema_cfg is not None:
            side.estimate(self.schema_cfg, self._key(VRAM_FIELDS))

    def _key(self, names: set[str]) -> tuple[str, ...]:
        """The values of the fields ``names``: what a check or an estimate depends on."""
        return tuple(str(self.form.field(n).value) for n in sorted(names))

    def _file_ok(self) -> bool:
        """A name Save can use: empty (Save asks for one) or NAME.yaml."""
        name = self.query_one("#cfg-file", Input).value.strip()
        return not name or (name.endswith((".yaml", ".yml")) and "\n" not in name)

    def _show_status(self, errors: dict[str, str]) -> None:
        status = self.query_one("#cfg-status", Static)
        if errors:
            first = next(iter(errors.items()))
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            put_markup(status, f"[b red]✗ {len(errors)} invalid:[/] {first[0]}: {escape(first[1])}{more}")
        elif self.load_error:
            put_markup(status, f"[b red]✗[/] {escape(self.load_error)}")
        elif self.cfg is not None:
            name = self.query_one("#cfg-file", Input).value.strip()
            note = ("" if name and self._file_ok() else "  [yellow]new file: Save asks for its name[/]" if not name
                    else "  [yellow]name the file configs/NAME.yaml to save[/]")
            dirty = "  [yellow]unsaved[/]" if self.unsaved_changes() else ""
            put_markup(status, f"[b green]✓ valid[/] {escape(summary(self.cfg))}{note}{dirty}")

    # --- events -----------------------------------------------------------------------------
    def _changed(self, widget) -> None:
        if self.load_error and self.form_data() != self._loaded_data:
            self.load_error = None  # edited since loading: the form speaks for itself now
        self.revalidate()

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "cfg-file":
            if self.cfg is not None:
                self.query_one("#cfg-save", Button).disabled = not self._file_ok()
            return
        self._changed(event.input)

    # --- unsaved edits (the app asks before quitting or leaving the step) ---------------------
    def unsaved_changes(self) -> str | None:
        if self._loaded_data is None or not self.is_mounted:
            return None
        now, then = flatten(self.form_data()), flatten(self._loaded_data)
        changed = [k for k in now if now.get(k) != then.get(k)]
        if not changed:
            return None
        where = self.query_one("#cfg-file", Input).value.strip() or "the new config"
        names = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        return f"{where} has unsaved edits ({names})"

    def save_then(self, then) -> None:
        self._save(then)

    def discard_changes(self) -> None:
        if self._source_key:
            self.load_source(self._source_key)

    @on(Checkbox.Changed)
    def _checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._changed(event.checkbox)

    @on(TextArea.Changed)
    def _textarea_changed(self, event: TextArea.Changed) -> None:
        self._changed(event.text_area)

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "cfg-source":
            key = str(event.value)
            if key == self._source_key:
                return
            # Back to the source shown before until the user says what to do with the edits.
            self.query_one(SourceSelect).show(self._source_key)
            self.confirm_leave("load another config", lambda: self.load_source(key))
            return
        self._changed(event.select)

    @on(Button.Pressed, "#cfg-save")
    def _save_pressed(self) -> None:
        self.action_save()

    def on_descendant_focus(self, event: DescendantFocus) -> None:
        name = getattr(event.widget, "field_name", None)
        text = event.widget.tooltip if isinstance(event.widget.tooltip, str) else None
        self.side.show_help(name, text)

    # --- actions ----------------------------------------------------------------------------
    def target_path(self) -> Path:
        name = self.query_one("#cfg-file", Input).value.strip() or f"configs/{DEFAULT_PRESET}.yaml"
        p = Path(name).expanduser()
        return p if p.is_absolute() else self.workspace.root / p

    def action_save(self) -> None:
        self._save(None)

    def _free_name(self) -> str:
        """A name for a new file: configs/<preset>.yaml, or configs/<preset>-2.yaml when taken."""
        preset = self._source_key.split(":", 1)[1] if (self._source_key or "").startswith("preset:") else "config"
        return self._rel(next_free_path(self.workspace.configs / f"{preset}.yaml"))

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.workspace.root)) if path.is_relative_to(self.workspace.root) else str(path)

    def _save(self, then) -> None:
        """Save the form; a new file asks for its name, another existing file asks before it is
        replaced. ``then`` runs once saved (not when the save is refused or cancelled)."""
        self.revalidate()
        if self.cfg is None:
            self.notify("Fix the marked fields first: the config is not valid.", severity="error")
            return
        name_field = self.query_one("#cfg-file", Input)
        if not name_field.value.strip():
            def named(name: str | None) -> None:
                if not name:
                    self.notify("Not saved: no file name given.", severity="warning")
                    return
                name_field.value = name
                self._save(then)

            self.app.push_screen(PathScreen("Save as", "A new config: the file to write (in configs/, "
                                            "ending in .yaml).", self._free_name()), named)
            return
        if not self._file_ok():
            self.notify("Name the file configs/NAME.yaml (it must end in .yaml).", severity="error")
            return
        path = self.target_path()
        mine = self.loaded_path is not None and path.resolve() == self.loaded_path.resolve()
        if path.exists() and not mine:
            fresh = next_free_path(path)

            def answer(choice: str | None) -> None:
                if choice == "overwrite":
                    self._write(path, then)
                elif choice == "new":
                    name_field.value = self._rel(fresh)
                    self._write(fresh, then)

            self.app.push_screen(ChoiceScreen("Overwrite?", f"{self._rel(path)} exists. Overwrite it, write "
                                              f"{self._rel(fresh)} instead, or cancel?",
                                              overwrite_choices()), answer)
            return
        self._write(path, then)

    def _write(self, path: Path, then) -> None:
        save_config(self.cfg, path)
        self.load_error = None
        self.loaded_path = path
        self._loaded_data = self.form_data()
        self.query_one(SourceSelect).reload(path)
        self._source_key = file_key(path)
        self.revalidate()
        self.notify(f"Saved {self._rel(path)}")
        if then is not None:
            then()

    def action_focus_source(self) -> None:
        self.query_one("#cfg-source", Select).focus()

    def action_edit(self) -> None:
        """Write the form to the file, open it in $EDITOR, load and check it on return."""
        name_field = self.query_one("#cfg-file", Input)
        if not name_field.value.strip():
            name_field.value = self._free_name()  # a new file (a preset): a free name, never another file
        path = self.target_path()
        mine = self.loaded_path is not None and path.resolve() == self.loaded_path.resolve()
        if path.exists() and not mine:
            self.notify(f"{self._rel(path)} exists: load it (ctrl+l) or give another name first.", severity="error")
            return
        if self.schema_cfg is not None:
            save_config(self.schema_cfg, path)
        else:  # keep the user's (invalid) values so they can fix them in the editor
            atomic_write_text(path, dump_config(self.form_data()))
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        cmd = [*shlex.split(editor), str(path)]
        try:
            try:
                with self.app.suspend():
                    subprocess.run(cmd, check=False)
            except SuspendNotSupported:  # headless (tests) or a web driver: run it as is
                subprocess.run(cmd, check=False, stdin=subprocess.DEVNULL)
        except OSError as exc:
            self.notify(f"Cannot run $EDITOR ({editor}): {exc}. Set EDITOR, e.g. export EDITOR=nano",
                        severity="error")
            return
        self.app.refresh()
        self.query_one(SourceSelect).reload(path)
        self.load_error = None
        self.side.forget_checks()
        self.load_file(path)
        self._source_key = file_key(path)
        self._loaded_data = self.form_data()
        self.revalidate()
        if self.load_error:
            self.notify(self.load_error, severity="error", timeout=8)

    def action_probe(self) -> None:
        """Probe the saved config (the file the form shows) in the Probe dialog."""
        from screens.widgets.config.probe_dialog import ProbeModal

        self.revalidate()
        if self.cfg is None:
            self.notify("Probe: fix the marked fields first: the config is not valid.", severity="error")
            return
        if self.loaded_path is None or self.unsaved_changes():
            self.notify("Probe: save the config first (ctrl+s): the probe measures the saved file.",
                        severity="warning")
            return
        shown = self.loaded_path

        def closed(result) -> None:
            if result is not None and result.written is not None:
                self.query_one(SourceSelect).reload(shown)  # the new file in the list; this one stays
                self.notify(f"Wrote {self._rel(Path(result.written))}: pick it at the top to load it.")

        checks = [w for w in self.app.workers if w.group == "config-check" and not w.is_finished]
        self.app.push_screen(ProbeModal(self.workspace, shown, wait_for=checks), closed)

    def action_check(self) -> None:
        self.revalidate()
        if self.schema_cfg is None:
            self.notify("Fix the marked fields first: the config is not valid.", severity="error")
            return
        side = self.side
        side.check_machine(self.schema_cfg)
        side.show_checks(self.schema_cfg)
