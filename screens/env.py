"""Step 1, Environment: the diagnosis of this machine and a VRAM go/no-go for a model, estimated from
its config.json or measured by probing a config of the workspace (the Probe dialog).

Layer twin: ``tuitune/commands/env.py`` is the same step's CLI verb (one name, two layers).

The checks run in a child process (``tuitune env --json``) from a thread worker, so
the UI never imports torch or bitsandbytes itself and first paint is instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Group
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import (Button, Checkbox, DataTable, Input, Label, LoadingIndicator, Select, Static, TabbedContent,
                             Tabs, TabPane)
from textual.worker import Worker, WorkerState

from screens.base import StepScreen
from screens.widgets.controls import NumberInput, Toggle
from tuitune.render import estimate_settings, estimate_table, status_text

METHODS = [("LoRA", "lora"), ("QLoRA (4-bit)", "qlora"), ("full", "full")]


class EnvScreen(StepScreen):
    STEP = "env"
    HELP = """\
# Environment

What this machine can do for fine-tuning. Each check says what it found and, when
it is not ok, what to do. **FAIL** blocks real training, **warn** is worth a look.

The **VRAM estimate** tab reads a model's `config.json` (no weights) and sums weights,
trainable parameters, gradients, optimizer states, activations and CUDA overhead for
the chosen method, then compares the total with each GPU's free memory. The model is
a folder, or a hub id such as `internlm/internlm2_5-7b-chat`: its `config.json` comes
from the local hub cache as you type; **Enter** fetches it from the hub when it is not
cached (and the machine is online).

To measure instead of estimating, pick a config of the workspace under **probe** and press
**p** (or the Probe button): a few optimizer steps of it on this machine. The estimate form
takes the config's model and settings, and the measured verdict (peak memory, the whole
run's ETA, the estimate beside the measured peak) shows under it.
The same from a shell: `tuitune env`, `tuitune env --estimate MODEL`, `tuitune train CONFIG --probe`.
"""

    BINDINGS = [
        Binding("r", "refresh", "Re-check", id="env-refresh"),
        Binding("c", "tab('checks')", "Checks", id="env-checks-tab"),
        Binding("v", "tab('vram')", "VRAM estimate", id="env-vram-tab"),
        Binding("p", "probe", "Probe", id="env-probe",
                tooltip="Measure a config of the workspace on this machine instead of estimating"),
    ]

    @dataclass
    class ChecksReady(Message):
        report: object

    def compose_body(self) -> ComposeResult:
        with TabbedContent(initial="checks", id="env-tabs"):
            with TabPane("Checks", id="checks"):
                yield Static("Checking this machine: importing torch and bitsandbytes takes a few seconds…",
                             id="env-summary")
                yield LoadingIndicator(id="env-loading")
                table = DataTable(id="env-checks", cursor_type="row", zebra_stripes=True)
                table.tooltip = "The checks. Move with the arrows; the selected check's fix shows below."
                yield table
                yield Static("", id="env-detail")
            with TabPane("VRAM estimate", id="vram"):
                # Three short rows, so that every label reads whole at 80 columns.
                with Horizontal(id="env-estimate-form", classes="form-row"):
                    yield Label("model", classes="field-label")
                    yield Input(self.workspace.first_model(), id="est-model", compact=True,
                                placeholder="model folder, or a hub id (owner/name)",
                                tooltip="A model folder (with config.json), absolute or relative to the workspace, "
                                "or a hub id: its config.json from the hub cache, Enter fetches it.")
                with Horizontal(id="env-estimate-form2", classes="form-row"):
                    yield Label("method", classes="field-label")
                    yield Select(METHODS, value="lora", allow_blank=False, id="est-method", compact=True,
                                 tooltip="LoRA trains small adapters on 16-bit weights; QLoRA on 4-bit "
                                 "weights (least memory); full trains every weight (most memory).")
                    yield Toggle("gradient checkpointing", True, id="est-ckpt", compact=True,
                                 tooltip="Recompute activations in the backward pass: far less memory, ~30% slower.")
                with Horizontal(id="env-estimate-form3", classes="form-row"):
                    yield Label("max length", classes="field-label")
                    yield NumberInput("2048", id="est-maxlen", compact=True,
                                      tooltip="Tokens per sample (max length).")
                    yield Label("batch", classes="field-label")
                    yield NumberInput("1", id="est-batch", compact=True,
                                      tooltip="Samples per GPU per step.")
                with Horizontal(id="env-estimate-form4", classes="form-row"):
                    yield Label("probe", classes="field-label")
                    configs = [(self._rel(p), str(p)) for p in self.workspace.config_files()]
                    yield Select(configs, id="est-config", compact=True, prompt="no config in configs/" if not configs
                                 else "a config", value=configs[0][1] if configs else Select.NULL,
                                 tooltip="A config of this workspace to measure on this machine (p): a few "
                                 "optimizer steps on the longest batch of its data.")
                    yield Button("Probe (p)", id="est-probe", compact=True, disabled=not configs,
                                 tooltip="Measure the config: peak memory, fits or not, the whole run's ETA.")
                with VerticalScroll(id="env-estimate-scroll"):
                    yield Static("", id="env-probe")
                    yield Static("", id="env-estimate")

    def on_mount(self) -> None:
        table = self.query_one("#env-checks", DataTable)
        table.display = False
        self._checks_width = None
        self.report = None
        self.run_checks()
        self.update_estimate()

    # --- checks -------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="doctor", description="environment checks")
    def run_checks(self) -> None:
        report = self.app.doctor(self.app.workspace.root)
        self.post_message(self.ChecksReady(report))

    def on_env_screen_checks_ready(self, message: ChecksReady) -> None:
        self.report = message.report
        checks = self.report.checks
        self.query_one("#env-loading").display = False
        table = self.query_one("#env-checks", DataTable)
        table.display = True
        self._fill_checks()
        if self.focused is None or isinstance(self.focused, Tabs):
            table.focus()  # arrow keys move through the checks, the fix of each shows below
        fails = [c.name for c in checks if c.status == "fail"]
        warns = [c.name for c in checks if c.status == "warn"]
        summary = Text()
        if fails:
            summary.append(f"{len(fails)} to fix: {', '.join(fails)}. ", style="bold red")
        if warns:
            summary.append(f"{len(warns)} to look at: {', '.join(warns)}. ", style="yellow")
        ok = len(checks) - len(fails) - len(warns)
        summary.append(f"{ok} ok.", style="green")
        self.query_one("#env-summary", Static).update(summary)
        self._show_detail(0)
        self.update_estimate()

    def _fill_checks(self) -> None:
        """The checks, with the "found" column wrapped to the width there is (never cut)."""
        if not self.report:
            return
        table = self.query_one("#env-checks", DataTable)
        width = table.size.width or (self.size.width - 22)
        checks = self.report.checks
        name_w = max([len("check"), *(len(c.name) for c in checks)])
        # 3 columns x 2 cells of padding, the status column, a scrollbar's room.
        found_w = max(16, width - 6 - 6 - name_w - 2)
        self._checks_width = width
        row = table.cursor_row
        table.clear(columns=True)
        table.add_column("status", width=6)
        table.add_column("check", width=name_w)
        table.add_column("found", width=found_w)
        for c in checks:
            table.add_row(status_text(c.status), c.name, Text(c.detail), key=c.name, height=None)
        if 0 <= row < table.row_count:
            table.move_cursor(row=row)

    def on_resize(self) -> None:
        if self.report and self.query_one("#env-checks", DataTable).size.width != self._checks_width:
            self.call_after_refresh(self._fill_checks)

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "hub-estimate" and event.state == WorkerState.ERROR:
            self.query_one("#env-estimate", Static).update(Text(str(event.worker.error), style="bold red"))
            return
        if event.worker.group == "doctor" and event.state == WorkerState.ERROR:
            self.query_one("#env-loading").display = False
            self.query_one("#env-summary", Static).update(
                Text(f"The checks could not run: {event.worker.error}. Press r to try again.", style="bold red"))

    @on(DataTable.RowHighlighted, "#env-checks")
    def _row(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail(event.cursor_row)

    def _show_detail(self, row: int) -> None:
        if not self.report or not (0 <= row < len(self.report.checks)):
            return
        c = self.report.checks[row]
        text = Text()
        text.append_text(status_text(c.status))
        text.append(f"  {c.name}: ", style="bold")
        text.append(c.detail)
        if c.fix:
            text.append("\nwhat to do: ", style="bold")
            text.append(c.fix)
        self.query_one("#env-detail", Static).update(text)

    def action_refresh(self) -> None:
        self.query_one("#env-loading").display = True
        self.query_one("#env-summary", Static).update("Checking again…")
        self.run_checks()

    def action_tab(self, tab: str) -> None:
        self.query_one("#env-tabs", TabbedContent).active = tab
        if tab == "vram":
            self.query_one("#est-model", Input).focus()
        else:
            self.query_one("#env-checks", DataTable).focus()

    # --- VRAM estimate ----------------------------------------------------------------------

    @on(Input.Changed, "#env-estimate-form Input, #env-estimate-form3 Input")
    @on(Select.Changed, "#est-method")
    @on(Checkbox.Changed, "#est-ckpt")
    def _estimate_inputs_changed(self) -> None:
        self.update_estimate()

    def _model_source(self) -> str | Path:
        """The model field as the estimator takes it: a folder (relative to the workspace), else the
        text as typed, which the resolver reads as a run, a hub id or a missing folder it names."""
        model = self.query_one("#est-model", Input).value.strip()
        path = Path(model).expanduser()
        if not path.is_absolute():
            path = self.app.workspace.root / path
        return path if path.exists() else model

    @on(Input.Submitted, "#est-model")
    def _fetch_hub_config(self) -> None:
        """Enter on a hub id not in the cache: fetch its config.json (a worker: the network may be slow)."""
        from tuitune.sources import looks_like_hub_id

        source = self._model_source()
        if isinstance(source, str) and looks_like_hub_id(source, self.app.workspace.root):
            self.query_one("#env-estimate", Static).update(Text(f"fetching {source}'s config.json…", style="dim"))
            self.fetch_hub_config(source)

    @work(thread=True, exclusive=True, exit_on_error=False, group="hub-estimate", description="hub config")
    def fetch_hub_config(self, repo_id: str) -> None:
        from tuitune.vram import hub_config_path

        hub_config_path(repo_id)  # into the hub cache; the estimate then reads it from there
        self.app.call_from_thread(self.update_estimate)

    def update_estimate(self) -> None:
        """Recompute the estimate from the form (config.json only: fast enough to run on every key).

        A hub id is read from the hub cache only here (never the network on a key press).
        """
        from tuitune.errors import TuituneError
        from tuitune.vram import advise, estimate_model_dir

        out = self.query_one("#env-estimate", Static)
        model = self.query_one("#est-model", Input).value.strip()
        if not model:
            out.update(Text("Type a model folder (with config.json), or a hub id, to estimate its GPU memory.",
                            style="dim"))
            return
        try:
            max_len = int(self.query_one("#est-maxlen", Input).value or 0)
            batch = int(self.query_one("#est-batch", Input).value or 0)
        except ValueError:
            max_len = batch = 0
        if max_len <= 0 or batch <= 0:
            out.update(Text("max length and batch size must be positive whole numbers", style="bold red"))
            return
        source = self._model_source()
        try:
            est = estimate_model_dir(
                source, online=False, workspace=self.app.workspace.root, method=self.query_one("#est-method", Select).value, max_length=max_len,
                batch_size=batch, gradient_checkpointing=self.query_one("#est-ckpt", Checkbox).value,
                chunked_loss=True)  # an sft run's default loss (training.kernels: auto), as `env --estimate`'s
        except TuituneError as exc:
            text = Text(str(exc), style="bold red")
            if isinstance(source, str) and "hub cache" in str(exc):
                text = Text(f"{source}: not in the hub cache yet; press Enter to fetch its config.json "
                            "from the hub (or give a local model folder)", style="yellow")
            out.update(text)
            return
        free = [g.free_gib for g in self.report.gpus] if self.report else []
        advice = advise(est, free)
        verdict = Text(advice.message, style="green" if advice.fits else "yellow" if advice.fits is None else "bold red")
        lines = [verdict, *[Text(f"  - {s}") for s in advice.suggestions], Text(""),
                 Text(estimate_settings(est), style="dim"), estimate_table(est)]
        out.update(Group(*lines))

    # --- probe: measured, beside the estimate -----------------------------------------------------

    def _rel(self, path: Path) -> str:
        root = self.workspace.root
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    def on_screen_resume(self) -> None:
        """Back from another step (the Config step may have saved a config): the configs listed again."""
        if not self.is_mounted:
            return
        select = self.query_one("#est-config", Select)
        configs = [(self._rel(p), str(p)) for p in self.workspace.config_files()]
        keep = select.value if any(v == select.value for _, v in configs) else (configs[0][1] if configs else None)
        with select.prevent(Select.Changed):
            select.set_options(configs)
            if keep is not None:
                select.value = keep
        select.prompt = "a config" if configs else "no config in configs/"
        self.query_one("#est-probe", Button).disabled = not configs

    @on(Button.Pressed, "#est-probe")
    def _probe_pressed(self) -> None:
        self.action_probe()

    def action_probe(self) -> None:
        """Probe the config picked under "probe" (the Probe dialog); its verdict then shows in this tab,
        with the estimate form set to the config's model, method, max length, batch and checkpointing."""
        from screens.widgets.config.probe_dialog import ProbeModal, result_text

        self.action_tab("vram")
        picked = self.query_one("#est-config", Select).value
        if picked is Select.NULL:
            self.query_one("#env-probe", Static).update(
                Text("No config to probe: make one in the Config step (3), then press p here.", style="yellow"))
            return
        path = Path(str(picked))
        self._estimate_from(path)

        def closed(result) -> None:
            if result is not None:
                head = Text(f"measured on this machine (probe of {self._rel(path)}):\n", style="bold")
                self.query_one("#env-probe", Static).update(head + result_text(result.lines(), dialog=False)
                                                           + Text("\n"))

        self.app.push_screen(ProbeModal(self.workspace, path), closed)

    def _estimate_from(self, path: Path) -> None:
        """The estimate form set to the config's own settings, so the estimate is of what is measured."""
        from tuitune.config import load_config
        from tuitune.errors import TuituneError

        try:
            cfg = load_config(path, workspace=self.workspace.root)
        except TuituneError:
            return  # the probe says what is wrong with it
        self.query_one("#est-model", Input).value = str(cfg.model)
        if cfg.method in {v for _, v in METHODS}:
            self.query_one("#est-method", Select).value = cfg.method
        self.query_one("#est-maxlen", Input).value = str(cfg.data.max_length)
        self.query_one("#est-batch", Input).value = str(cfg.training.batch_size)
        self.query_one("#est-ckpt", Checkbox).value = cfg.training.gradient_checkpointing
