"""Step 5, Merge: a run's adapter + its base → a standalone model, shard by shard, verified.

Layer twin: ``tuitune/commands/merge.py`` is the same step's CLI verb (one name, two layers).

The merge itself is ``tuitune.merge.merge`` (headless, streamed, checked against peft);
this screen picks the adapter, the output folder, the shard size and dtype, runs the
merge in a thread worker, shows its progress by tensor and shard, and the verification.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label, ProgressBar, Select, Static
from textual.worker import Worker, WorkerState, get_current_worker

from screens.base import HANDOVER_KEYS, StepScreen
from screens.widgets.choice import Choice, ChoiceScreen
from screens.widgets.controls import Toggle
from screens.widgets.merge.adapter_table import MergeSources
from screens.workers import one_line
from tuitune.errors import said
from tuitune.steps import step

DTYPE_CHOICES = [("as the base", "auto"), ("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "fp32")]
#: The engine's fields as this screen's controls are labelled (compose_body writes these labels;
#: errors and notes name their field so: "max shard 'abc': ...", "skipped (verify off)"). The
#: screen has no base-model field: the engine's fix for another base is the shell command.
LABELS = {"out": "output", "max_shard_size": "max shard", "dtype": "dtype", "verify": "verify off",
          "checkpoint": "checkpoint", "check_runtime": "run in llama.cpp"}

# The answers when the output folder exists (short labels: the question names the folders).
OUTPUT_EXISTS_CHOICES = [Choice("overwrite", "Overwrite", "o", "error"), Choice("new", "New name", "n", "primary"),
                         Choice("cancel", "Cancel", "c")]


def _export_labels() -> str:
    """The export formats as the screen names them ("GGUF, Ollama"), from the export registry."""
    from tuitune.export import FORMATS

    return ", ".join(f.label for f in FORMATS.values())


class MergeScreen(StepScreen):
    STEP = "merge"
    HELP = """\
# Merge

Merge a run's LoRA adapter (its final adapter or a checkpoint) into its base model and
write a standalone model folder: safetensors shards with an index, config, generation
config, the tokenizer with its chat template, and a model card. It loads with
`AutoModelForCausalLM.from_pretrained`, without peft.

The merge **streams**: one shard of the base is read, the LoRA update `B·A·alpha/r` is
added to its weights, and the output shard is written, so it needs about one shard of
memory, not the whole model. DoRA and other layouts that cannot be streamed are merged
by peft instead (the result says so).

Afterwards the merged model's logits are compared with base + adapter (peft) on a few
prompts; the result is shown here and stored in the model card. The output folder
appears only when everything is written and checked.

**QLoRA** adapters are merged into the 16-bit base weights, not 4-bit ones: 4-bit
weights cannot hold the small LoRA update, and a 16-bit model is what loaders and
quantizers start from.

- **m** (or Enter in a field) merges the selected adapter. If the output folder exists,
  you are asked first: overwrite (its files are moved aside, never deleted), write to a
  new name (`…-merged-2`), or cancel.
- **x** stops a merge (nothing is written). **r** re-reads the runs.
- **o** opens the merged model in Chat, once merged.
- **e** (in the footer, and named in the result) exports the selected adapter (merged first) or the model just merged: a GGUF file
  written by llama.cpp's own converter (f16, bf16 or q8_0), or an Ollama folder (the GGUF
  and a Modelfile with the run's template, stop words and system prompt). The file is read
  back and checked; the result gives the command to run it.

The same from a shell: `tuitune merge RUN -o OUT [--checkpoint N] [--max-shard-size 2GB] [--dtype bf16]`.
"""

    BINDINGS = [
        Binding("m", "merge", "Merge", id="merge-start", tooltip="Merge the selected adapter"),
        Binding("x", "cancel", "Stop", id="merge-cancel", tooltip="Stop the merge; nothing is written"),
        Binding("r", "refresh", "Reload", id="merge-refresh", tooltip="Re-read the runs and their adapters"),
        # Short labels: with o and the App's f1, q and ^p the footer fits 80 columns.
        Binding("e", "export", "Export", id="merge-export", tooltip=f"Export as {_export_labels()}"),
        HANDOVER_KEYS,  # the registry's: o Open in Chat
    ]

    @dataclass
    class Progress(Message):
        done: int
        total: int
        shard: int
        shards: int

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, MergeScreen.Progress)

    @dataclass
    class Log(Message):
        text: str

    @dataclass
    class Done(Message):
        result: object

    @dataclass
    class Exported(Message):
        result: object

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.merged: Path | None = None
        self._auto_output: str | None = None
        self._hinted: str | None = None

    def compose_body(self) -> ComposeResult:
        yield Static("Adapters in this workspace", classes="section-title", id="merge-title")
        yield MergeSources(id="merge-sources")
        with Horizontal(classes="form-row", id="merge-form"):
            yield Label(LABELS["out"], classes="field-label")
            yield Input(id="merge-out", compact=True, placeholder="folder for the merged model",
                        tooltip="Where the merged model goes (relative to the workspace). It must not exist or "
                        "be empty; it appears only when the merge is complete and verified.")
        with Horizontal(classes="form-row", id="merge-form2"):
            yield Label(LABELS["max_shard_size"], classes="field-label")
            yield Input("2GB", id="merge-shard", compact=True,
                        tooltip="Largest output shard, e.g. 500MB, 2GB, 5GB.")
            yield Label(LABELS["dtype"], classes="field-label")
            yield Select(DTYPE_CHOICES, value="auto", allow_blank=False, id="merge-dtype", compact=True,
                         tooltip="The merged weights' dtype: as the base (default), bf16, fp16 or fp32.")
            yield Toggle("verify", True, id="merge-verify", compact=True,
                         tooltip="Compare the merged model's logits with base + adapter (loads each once).")
        with Horizontal(id="merge-progress-row"):
            yield Static("", id="merge-status")
            yield ProgressBar(id="merge-progress", show_eta=False)
        yield Static("", id="merge-result")

    def on_mount(self) -> None:
        self.query_one("#merge-progress", ProgressBar).display = False
        self.refresh_sources()

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self.refresh_sources()

    # --- the adapters ---------------------------------------------------------------------------

    def refresh_sources(self) -> None:
        from tuitune.merge import list_sources

        table = self.query_one(MergeSources)
        handed = self.take_handover()  # a run from Train: selected once
        table.fill(list_sources(self.workspace.root), select=handed.value if handed else None)
        if not table.row_count:
            self._status(Text("No adapters yet: train a LoRA run in the Train step (4), then merge it here.",
                              style="dim"))
        self._source_changed()

    @on(MergeSources.RowHighlighted, "#merge-sources")
    def _highlighted(self) -> None:
        self._source_changed()

    def _source_changed(self) -> None:
        row = self.query_one(MergeSources).current()
        out = self.query_one("#merge-out", Input)
        if row is None:
            return
        # The output follows the selection until the user types their own.
        if not out.value or out.value == self._auto_output:
            self._auto_output = str(row.default_output(Path(".")))
            out.value = self._auto_output
        if self.merged is None and not self._merging() and row.key != self._hinted:
            self._hinted = row.key  # once per selection: a dialog closing must not wipe what it said
            self._status(Text(f"{row.run_id}, {row.what}: press m to merge", style="dim"))

    def _merging(self) -> bool:
        return any(w.group == "merge" and w.is_running for w in self.workers)

    # --- merging --------------------------------------------------------------------------------

    def _out_path(self) -> Path:
        p = Path(self.query_one("#merge-out", Input).value.strip()).expanduser()
        return p if p.is_absolute() else self.workspace.root / p

    @on(Input.Submitted, "#merge-out, #merge-shard")
    def action_merge(self) -> None:
        row = self.query_one(MergeSources).current()
        if row is None:
            self._status(Text("Pick an adapter first (train a LoRA run in step 4).", style="bold red"))
            return
        if self._merging():
            self._status(Text("A merge is already running; x stops it.", style="yellow"))
            return
        if not self.query_one("#merge-out", Input).value.strip():
            self._status(Text("Type an output folder.", style="bold red"))
            return
        from tuitune.fsutil import next_free_path, output_exists

        out = self._out_path()
        if out.is_dir() and output_exists(out):
            free = next_free_path(out)
            self.app.push_screen(
                ChoiceScreen("The output folder exists",
                             f"{self._shown_path(out)} already holds files. Overwrite moves them aside to "
                             f"{out.name}.replaced-<time> (nothing is deleted); or write "
                             f"{self._shown_path(free)} instead.",
                             OUTPUT_EXISTS_CHOICES),
                lambda answer: self._answered(answer, row, free))
            return
        self._start(row, out, force=False)

    def _answered(self, answer: str | None, row, free: Path) -> None:
        if answer == "overwrite":
            self._start(row, self._out_path(), force=True)
        elif answer == "new":
            out = self.query_one("#merge-out", Input)
            out.value = self._shown_path(free)  # the user's choice now: kept when the selection moves
            self._start(row, free, force=False)
        else:
            self._status(Text("not merged: the output folder is unchanged", style="yellow"))

    def _start(self, row, out: Path, force: bool) -> None:
        dtype = self.query_one("#merge-dtype", Select).value
        self.merged = None
        self.query_one("#merge-result", Static).update("")
        bar = self.query_one("#merge-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self._status(Text(f"merging {row.run_id}, {row.what}…"))
        self.run_merge(row.run_id, row.checkpoint, out, self.query_one("#merge-shard", Input).value,
                       None if dtype == "auto" else dtype, self.query_one("#merge-verify", Toggle).value, force)

    @work(thread=True, exclusive=True, exit_on_error=False, group="merge", description="merge")
    def run_merge(self, run_id: str, checkpoint: int | None, out: Path, shard: str, dtype: str | None,
                  verify: bool, force: bool = False) -> None:
        from tuitune.merge import merge
        from tuitune.sources import resolve

        worker = get_current_worker()
        src = resolve(run_id, self.workspace.root, checkpoint=checkpoint, need="adapter")
        result = merge(src, out, max_shard_size=shard.strip() or "2GB", dtype=dtype, verify_result=verify, force=force,
                       on_progress=lambda *a: self.post_message(self.Progress(*a)),
                       log=lambda line: self.post_message(self.Log(line)),
                       cancelled=lambda: worker.is_cancelled)
        self.post_message(self.Done(result))

    def on_merge_screen_progress(self, message: Progress) -> None:
        self.query_one("#merge-progress", ProgressBar).update(total=message.total, progress=message.done)
        self._status(Text(f"shard {message.shard}/{message.shards}, tensor {message.done}/{message.total}"))

    def on_merge_screen_log(self, message: Log) -> None:
        self._status(Text(said(message.text, LABELS)))

    def on_merge_screen_done(self, message: Done) -> None:
        r = message.result
        self.merged = r.out
        self.query_one("#merge-progress", ProgressBar).update(total=max(r.tensors, 1), progress=max(r.tensors, 1))
        self._status(Text(f"merged in {r.seconds:.1f} s", style="green"))
        self.show_result(r)

    def show_result(self, r) -> None:
        from tuitune.merge import human_size

        text = Text()
        text.append("wrote ", style="bold")
        text.append(f"{self._shown_path(r.out)}\n")
        # What to do next comes second, so a short terminal shows it above the details.
        text.append("press ", style="dim")
        nexts = [("e", f"Export ({_export_labels()})"), *((g.key, g.label) for g in step(self.STEP).gives)]
        for i, (key, label) in enumerate(nexts):
            text.append(" · " if i else "", style="dim").append(key, style="bold").append(f": {label}", style="dim")
        text.append("\n")
        how = "streamed shard by shard" if r.streamed else f"merged by peft ({r.fallback})"
        text.append(f"{r.shards} shard(s), {r.tensors} tensors, {human_size(r.bytes)}, {r.dtype}, {how}\n")
        if r.untied:
            text.append("embeddings untied: the adapter changed the input embeddings and the output head "
                        "differently\n", style="yellow")
        v = r.verification
        if v is None:
            text.append(f"verification {said(r.verify_note or 'skipped', LABELS)}", style="yellow")
        else:
            text.append(v.line(), style="green" if v.ok else "bold red")
        if r.replaced_to:
            text.append(f"\nthe folder that was there is now {r.replaced_to}", style="dim")
        self.query_one("#merge-result", Static).update(text)

    def _shown_path(self, p: Path) -> str:
        try:
            return str(Path(p).relative_to(self.workspace.root))
        except ValueError:
            return str(p)

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "merge":
            return
        if event.state == WorkerState.ERROR:
            self.query_one("#merge-progress", ProgressBar).display = False
            self._status(Text(f"error: {one_line(event.worker.error, LABELS)}", style="bold red"))
        elif event.state == WorkerState.CANCELLED:
            self.query_one("#merge-progress", ProgressBar).display = False
            self._status(Text("merge stopped; nothing was written", style="yellow"))

    def action_cancel(self) -> None:
        if self._merging():
            self.workers.cancel_group(self, "merge")

    # --- export -------------------------------------------------------------------------------

    def action_export(self) -> None:
        from screens.widgets.merge.export_panel import ExportModal

        row = self.query_one(MergeSources).current()
        if row is None and self.merged is None:
            self._status(Text("Pick an adapter first (train a LoRA run in step 4).", style="bold red"))
            return
        if self._merging():
            self._status(Text("A merge is already running; x stops it.", style="yellow"))
            return
        if self.merged is not None:
            spec, what, stem = str(self.merged), self._shown_path(self.merged), self.merged.name
        else:
            spec = row.run_id if row.checkpoint is None else f"{row.run_id}:checkpoint-{row.checkpoint}"
            what, stem = f"{row.run_id}, {row.what}", row.run_id if row.checkpoint is None else \
                f"{row.run_id}-step{row.checkpoint}"
        self.app.push_screen(ExportModal(what, stem), lambda req: self._export_chosen(spec, req))

    def _export_chosen(self, spec: str, req) -> None:
        if req is None:
            return
        out = Path(req.out).expanduser()
        out = out if out.is_absolute() else self.workspace.root / out
        bar = self.query_one("#merge-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self.query_one("#merge-result", Static).update("")
        from tuitune.export import FORMATS

        typed = f" ({req.outtype})" if FORMATS[req.fmt].gguf else ""
        self._status(Text(f"exporting {spec} as {req.fmt}{typed}…"))
        self.run_export(spec, req.fmt, req.outtype, out, req.check_runtime)

    @work(thread=True, exclusive=True, exit_on_error=False, group="merge", description="export")
    def run_export(self, spec: str, fmt: str, outtype: str, out: Path, check_runtime: bool = False) -> None:
        from tuitune.export import export

        result = export(spec, out, workspace=self.workspace.root, fmt=fmt, outtype=outtype,
                        check_runtime=check_runtime, log=lambda line: self.post_message(self.Log(line)),
                        on_progress=lambda *a: self.post_message(self.Progress(*a)))
        self.post_message(self.Exported(result))

    def on_merge_screen_exported(self, message) -> None:
        r = message.result
        self.query_one("#merge-progress", ProgressBar).display = False
        self._status(Text(f"exported in {r.seconds:.1f} s", style="green"))
        text = Text()
        text.append("wrote ", style="bold").append(f"{self._shown_path(r.gguf or r.out)}\n")
        text.append(f"{r.bytes / 1e6:.1f} MB" + (f", {r.outtype}, {r.architecture}\n" if r.gguf else "\n"))
        if r.checks:
            text.append("checked: " + "; ".join(r.checks) + "\n", style="green")
        if r.runtime:   # the Export dialog's "run in llama.cpp"
            same = r.runtime["same"] == len(r.runtime["answers"])
            text.append(r.runtime["line"] + "\n", style="green" if same else "yellow")
            for line in r.runtime["details"]:
                text.append(f"  {line}\n", style="yellow")
        text.append("run it: ", style="bold").append(r.command)
        self.query_one("#merge-result", Static).update(text)
        self.query_one("#merge-result", Static).set_class(bool(r.runtime), "-scroll")

    def action_refresh(self) -> None:
        self.refresh_sources()

    def handover_value(self, kind: str) -> str | None:
        """The merged model, for `o` (Chat); None (and a hint) before a merge."""
        if self.merged is None:
            self._status(Text("Merge first (m); then the merged model can be opened in Chat.", style="yellow"))
            return None
        return str(self.merged)

    def _status(self, text: Text) -> None:
        self.query_one("#merge-status", Static).update(text)
