"""Step 3, Config: a form over the run config's schema that lets no bad value through.

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
from dataclasses import dataclass, field
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.events import DescendantFocus
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Select, Static, TextArea
from textual.worker import Worker, WorkerState

from screens.base import StepScreen
from screens.widgets.choice import ChoiceScreen, PathScreen, overwrite_choices
from screens.widgets.config_field import ConfigField
from tuitune.config import (
    ERROR,
    PRESETS,
    RunConfig,
    check_files,
    config_from_data,
    describe,
    diff_against,
    dump_config,
    errors_of,
    flatten,
    get_preset,
    parse_yaml,
    save_config,
    summary,
    unflatten,
)
from tuitune.config.fields import field_specs
from tuitune.errors import TuituneError
from tuitune.fsutil import atomic_write_text, next_free_path

#: Fields whose change alters the VRAM estimate.
VRAM_FIELDS = {"model", "method", "data.max_length", "training.batch_size", "training.gradient_checkpointing",
               "lora.r", "lora.target_modules", "distributed.gpus", "distributed.deepspeed", "training.precision"}
#: Fields the machine checks look at (GPUs, bitsandbytes, DeepSpeed, the tokenizer and template).
CHECK_FIELDS = {"model", "template", "method", "trust_remote_code", "quantization.compute_dtype",
                "training.precision", "distributed.gpus", "distributed.nnodes", "distributed.master_addr",
                "distributed.deepspeed", "evaluation.prompts", "data.system"}
DEFAULT_PRESET = "tiny-demo"


def _preset_key(name: str) -> str:
    return f"preset:{name}"


def _file_key(path: Path) -> str:
    return f"file:{path}"


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
The same from a shell: `tuitune config list | new | check | show`.
"""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="config-save"),
        Binding("ctrl+o", "edit", "$EDITOR", id="config-edit"),
        Binding("ctrl+r", "check", "Check", id="config-check"),
        Binding("ctrl+l", "focus_source", "Load", id="config-load"),
    ]

    @dataclass
    class VramReady(Message):
        text: str

    @dataclass
    class ChecksReady(Message):
        issues: list = field(default_factory=list)

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
        self.machine_issues: list = []
        self.machine_checked = False
        self._vram_key = None
        self._check_key = None
        self._fields: dict[str, ConfigField] | None = None
        self._loaded_data: dict | None = None

    # --- layout -------------------------------------------------------------------------
    def _sources(self) -> list[tuple[str, str]]:
        opts = [(f"preset {name}", _preset_key(name)) for name in PRESETS]
        configs = self.workspace.configs
        if configs.is_dir():
            for p in sorted(configs.glob("*.y*ml")):
                opts.append((f"file {p.name}", _file_key(p)))
        return opts

    def _initial_source(self) -> str:
        files = [k for _, k in self._sources() if k.startswith("file:")]
        return files[0] if files else _preset_key(DEFAULT_PRESET)

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="cfg-top"):
            yield Select(self._sources(), value=self._initial_source(), allow_blank=False, id="cfg-source",
                         compact=True, tooltip="Load a preset, or a config saved in configs/ (ctrl+l).")
            yield Input("", id="cfg-file", compact=True, placeholder="configs/NAME.yaml",
                        tooltip="The file Save writes, in the workspace's configs/ folder.")
            yield Button("Save", id="cfg-save", compact=True, disabled=True, variant="primary",
                         tooltip="Save the config (ctrl+s); disabled while a field is invalid.")
        yield Static("", id="cfg-status")
        with Horizontal(id="cfg-main"):
            with VerticalScroll(id="cfg-form"):
                section = None
                for spec in field_specs():
                    if spec.section != section:
                        section = spec.section
                        if section:
                            yield Static(f"{section} — {describe(section)}", classes="section-title")
                    yield ConfigField(spec)
            with VerticalScroll(id="cfg-side"):
                yield Static("", id="cfg-help")
                yield Static("VRAM estimate …", id="cfg-vram")
                yield Static("", id="cfg-diff")
                yield Static("", id="cfg-issues")

    def on_mount(self) -> None:
        self.load_source(self.query_one("#cfg-source", Select).value)
        self.query_one("#cfg-source").focus()
        self.query_one("#cfg-file", Input).field_label = "File"  # type: ignore[attr-defined]

    # --- loading into the form --------------------------------------------------------------
    def fields(self) -> list[ConfigField]:
        if self._fields is None:  # queried once: the form's rows never change
            self._fields = {f.field_name: f for f in self.query(ConfigField)}
        return list(self._fields.values())

    def field(self, name: str) -> ConfigField:
        self.fields()
        return self._fields[name]

    def fill(self, data: dict) -> None:
        """Put raw values (from YAML or a preset) into the inputs; missing keys get defaults."""
        from tuitune.config import flatten

        flat = flatten(data)
        # Setting a value posts a Changed message; the caller re-validates once instead.
        with self.prevent(Input.Changed, Select.Changed, Checkbox.Changed, TextArea.Changed):
            for f in self.fields():
                spec = f.spec
                f.set_value(flat.get(spec.name, None if spec.optional else spec.default))

    def load_source(self, key: str) -> None:
        self.load_error = None
        self._check_key = None  # a loaded config is always checked again
        self._source_key = key
        self._select_source(key)
        if key.startswith("preset:"):
            # A preset is a new, unnamed file: Save asks where (never over the file loaded before).
            name = key.split(":", 1)[1]
            self.fill(get_preset(name).model_dump(mode="json"))
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
            self.fill(data)
        try:
            config_from_data(data, workspace=self.workspace.root, where=rel, lines=lines)
        except TuituneError as exc:
            self.load_error = str(exc)

    # --- validation -------------------------------------------------------------------------
    def form_data(self) -> dict:
        return unflatten({f.field_name: f.value for f in self.fields()})

    def revalidate(self) -> None:
        """Validate the whole form; mark each bad field; enable Save only when all is valid."""
        errors: dict[str, str] = {}
        for f in self.fields():
            w = f.control
            if isinstance(w, Input):
                result = w.validate(w.value)
                if result is not None and not result.is_valid:
                    errors[f.field_name] = "; ".join(result.failure_descriptions)
        cfg = None
        try:
            cfg = RunConfig.model_validate(self.form_data()).with_context(workspace=self.workspace.root)
        except Exception as exc:  # pydantic ValidationError
            from pydantic import ValidationError

            if not isinstance(exc, ValidationError):
                raise
            for name, msg in errors_of(exc):
                if name in ("(top level)",):
                    name = "model"
                errors.setdefault(name if self._has_field(name) else "model", msg)
        self.schema_cfg = cfg if not errors else None
        if self.schema_cfg is not None:
            # Missing files are errors on their field, as `tuitune config check` reports them.
            for issue in check_files(self.schema_cfg):
                if issue.level == ERROR:
                    errors.setdefault(issue.field if self._has_field(issue.field) else "model", issue.message)
        for f in self.fields():
            f.show_error(errors.get(f.field_name))
        self.cfg = cfg if not errors else None
        self.query_one("#cfg-save", Button).disabled = self.cfg is None or not self._file_ok()
        self._show_status(errors)
        self._show_diff()
        self._maybe_check()
        self._show_issues()
        self._maybe_estimate()

    def _has_field(self, name: str) -> bool:
        self.fields()
        return name in self._fields

    def _file_ok(self) -> bool:
        """A name Save can use: empty (Save asks for one) or NAME.yaml."""
        name = self.query_one("#cfg-file", Input).value.strip()
        return not name or (name.endswith((".yaml", ".yml")) and "\n" not in name)

    def _show_status(self, errors: dict[str, str]) -> None:
        status = self.query_one("#cfg-status", Static)
        if errors:
            first = next(iter(errors.items()))
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            _put(status, f"[b red]✗ {len(errors)} invalid:[/] {first[0]}: {_escape(first[1])}{more}")
        elif self.load_error:
            _put(status, f"[b red]✗[/] {_escape(self.load_error)}")
        elif self.cfg is not None:
            name = self.query_one("#cfg-file", Input).value.strip()
            note = ("" if name and self._file_ok() else "  [yellow]new file: Save asks for its name[/]" if not name
                    else "  [yellow]name the file configs/NAME.yaml to save[/]")
            dirty = "  [yellow]unsaved[/]" if self.unsaved_changes() else ""
            _put(status, f"[b green]✓ valid[/] {_escape(summary(self.cfg))}{note}{dirty}")

    def _show_diff(self) -> None:
        diff_box = self.query_one("#cfg-diff", Static)
        if self.schema_cfg is None:
            _put(diff_box, "")
            return
        base = self.schema_cfg.preset or "defaults"
        rows = diff_against(self.schema_cfg)
        if not rows:
            _put(diff_box, f"[b]Diff[/] same as {base}")
            return
        lines = [f"[b]Diff[/] against {base}"]
        for name, a, b in rows[:12]:
            lines.append(f" {name}: {_short(a)} → {_short(b)}")
        if len(rows) > 12:
            lines.append(f" … {len(rows) - 12} more")
        _put(diff_box, "\n".join(lines))

    def _show_issues(self) -> None:
        box = self.query_one("#cfg-issues", Static)
        if self.schema_cfg is None:
            _put(box, "")
            return
        issues = check_files(self.schema_cfg)
        seen = {(i.field, i.message) for i in issues}
        issues += [i for i in self.machine_issues if (i.field, i.message) not in seen]
        if not issues:
            done = "files and this machine ok" if self.machine_checked else "files ok; checking this machine…"
            _put(box, f"[b]Checks[/] [green]{done}[/] (ctrl+r: again)")
            return
        lines = ["[b]Checks[/]"]
        for i in issues:
            style = "red" if i.level == ERROR else "yellow"
            lines.append(f"[{style}]{i.level}[/] {i.field}: {_escape(i.message)}")
        _put(box, "\n".join(lines))

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

    def _select_source(self, key: str) -> None:
        sel = self.query_one("#cfg-source", Select)
        if sel.value != key and any(k == key for _, k in self._sources()):
            with self.prevent(Select.Changed):
                sel.value = key

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
            self._select_source(self._source_key)
            self.confirm_leave("load another config", lambda: self.load_source(key))
            return
        self._changed(event.select)

    @on(Button.Pressed, "#cfg-save")
    def _save_pressed(self) -> None:
        self.action_save()

    def on_descendant_focus(self, event: DescendantFocus) -> None:
        name = getattr(event.widget, "field_name", None)
        text = event.widget.tooltip if isinstance(event.widget.tooltip, str) else None
        help_box = self.query_one("#cfg-help", Static)
        if name:
            _put(help_box, f"[b]{name}[/]\n{_escape(describe(name))}")
        elif text:
            _put(help_box, _escape(text))

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
        self._refresh_sources(path)
        self._source_key = _file_key(path)
        self.revalidate()
        self.notify(f"Saved {self._rel(path)}")
        if then is not None:
            then()

    def _refresh_sources(self, selected: Path | None = None) -> None:
        sel = self.query_one("#cfg-source", Select)
        with self.prevent(Select.Changed):
            sel.set_options(self._sources())
            if selected is not None:
                sel.value = _file_key(selected)

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
        self._refresh_sources(path)
        self.load_error = None
        self._check_key = None
        self.load_file(path)
        self._source_key = _file_key(path)
        self._loaded_data = self.form_data()
        self.revalidate()
        if self.load_error:
            self.notify(self.load_error, severity="error", timeout=8)

    def _maybe_check(self) -> None:
        """Re-run the machine checks when a field they look at changed (not on every keystroke)."""
        if self.schema_cfg is None:
            return
        key = tuple(str(self.field(n).value) for n in sorted(CHECK_FIELDS))
        if key != self._check_key:
            self._check_key = key
            self.machine_issues, self.machine_checked = [], False
            self.run_checks(self.schema_cfg)

    def action_check(self) -> None:
        self.revalidate()
        if self.schema_cfg is None:
            self.notify("Fix the marked fields first: the config is not valid.", severity="error")
            return
        self.machine_issues, self.machine_checked = [], False
        self._show_issues()
        self.run_checks(self.schema_cfg)

    @work(thread=True, exclusive=True, exit_on_error=False, group="config-check",
          description="checking the config against this machine")
    def run_checks(self, cfg: RunConfig) -> None:
        from textual.worker import get_current_worker

        from tuitune.config import check_config

        issues = check_config(cfg)
        if not get_current_worker().is_cancelled:  # a newer check replaced this one
            self.post_message(self.ChecksReady(issues))

    def on_config_screen_checks_ready(self, message: ChecksReady) -> None:
        self.machine_issues, self.machine_checked = message.issues, True
        self._show_issues()

    # --- VRAM -------------------------------------------------------------------------------
    def _maybe_estimate(self) -> None:
        cfg = self.schema_cfg
        if cfg is None:
            return
        key = tuple(str(self.field(n).value) for n in sorted(VRAM_FIELDS))
        if key == self._vram_key:
            return
        self._vram_key = key
        self.estimate_vram(cfg)

    @work(thread=True, exclusive=True, exit_on_error=False, group="config-vram",
          description="estimating VRAM")
    def estimate_vram(self, cfg: RunConfig) -> None:
        from textual.worker import get_current_worker

        text = vram_text(cfg, free_gib())
        if not get_current_worker().is_cancelled:
            self.post_message(self.VramReady(text))

    def on_config_screen_vram_ready(self, message: VramReady) -> None:
        _put(self.query_one("#cfg-vram", Static), message.text)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            err = event.worker.error
            target = "#cfg-vram" if event.worker.group == "config-vram" else "#cfg-issues"
            _put(self.query_one(target, Static), f"[red]{_escape(str(err))}[/]")


_FREE: list[float] | None = None


def free_gib() -> list[float]:
    """Free memory of each visible GPU (asked once: on a box without NVML it imports torch)."""
    global _FREE
    if _FREE is None:
        from tuitune.doctor import gpu_inventory

        _FREE = [g.free_gib for g in gpu_inventory()]
    return _FREE


def vram_text(cfg: RunConfig, free: list[float]) -> str:
    """The estimate for this config and what to do if it does not fit (markup)."""
    from tuitune import vram

    try:
        est = vram.estimate_for_config(cfg)
        advice = vram.advise(est, free)
    except TuituneError as exc:
        return f"[b]VRAM[/] [red]{_escape(str(exc))}[/]"
    parts = ", ".join(f"{k} {v:.2f}" for k, v in est.parts.items())
    style = "green" if advice.fits else "red" if advice.fits is False else "yellow"
    text = [f"[b]VRAM[/] ≈ [b]{est.total_gib:.2f} GiB[/] per GPU", f"[dim]{_escape(parts)}[/]",
            f"[{style}]{_escape(advice.message)}[/]"]
    for s in advice.suggestions[:3]:
        text.append(f" • {_escape(s)}")
    return "\n".join(text)


def _put(widget: Static, text: str) -> None:
    """Update a Static only when its text changes (an update costs a layout pass)."""
    if getattr(widget, "_cfg_text", None) != text:
        widget._cfg_text = text  # type: ignore[attr-defined]
        widget.update(text)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))


def _short(value, width: int = 24) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text if len(text) <= width else text[: width - 1] + "…"
    return _escape(text)
