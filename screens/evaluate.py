"""Step 7, Evaluate: did fine-tuning help, on records the model never saw?

The evaluation is ``tuitune.eval`` (headless): this screen gathers the target, data and
baseline, runs :func:`tuitune.eval.evaluate` in a thread worker that reports progress by
messages (shown with an ETA; x stops it), and shows the report: the summary card, the
records by change and the one under the cursor. Reports already written are reopened
from the list. g / b mark a record by hand (saved in the report); o opens its prompt in
Chat with both models side by side.
"""

from __future__ import annotations

import time
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
from screens.widgets.eval.view import ReportView
from screens.widgets.controls import NumberInput, Toggle
from screens.workers import failure

#: The engine's fields as this screen's controls name them (an error names its field so).
LABELS = {"target": "the target field", "data": "the data field", "against": "the against field",
          "max_samples": "samples", "max_new_tokens": "tokens", "checkpoints": "checkpoints", "bench": "general"}


class EvalScreen(StepScreen):
    STEP = "eval"
    # No focus by itself on arrival or after the palette closes: the App's default ("*") would put
    # the cursor in the target field, where number keys type and q is no longer Quit. on_mount
    # focuses the reports list instead (the same default sits in the shared base; see the report).
    AUTO_FOCUS = ""
    HELP = """\
# Evaluate

Did fine-tuning help? The **target** (a run: its final adapter; `RUN:checkpoint-N`; an
adapter or model folder) and its baseline (the run's base model, or the model in
**against**) answer the same held-out records: the file in **data**, else the run's
`data.eval`, else the test side of the split whose train side the run trained on (the
`split.json` a split writes beside its two files says which). Nothing else: a
`test.jsonl` from another file's split is not the run's. The line under the target
names the file and its records before anything runs.

For each: the held-out loss on the answer tokens (the training template and mask) and
its perplexity, and the answers, scored against the references: ROUGE-L (characters
for Chinese, words otherwise), BLEU-4 and chrF (sacrebleu), exact match. With
**checkpoints** on, the loss of every checkpoint too, to pick the best one.
A GRPO run's held-out prompts are scored by its own rewards instead: each reward's mean,
the exact pass rate (records with an answer), the format rate (its regex rewards), answer
length; the table sorts the records by the change of their reward.

- **r** runs the evaluation (the report goes to `evals/<target>-<time>/`: report.json,
  answers.jsonl, report.md); **x** stops it.
- The table lists the records, biggest change first; the pane beside it shows the
  question, the reference and both answers.
- **g** / **b** mark the record good or bad by hand (kept in the report, counted in its
  summary); **o** opens its prompt in Chat, baseline and target side by side.
- **report** reopens a report already in the workspace.
- **general** adds general ability, base against tuned: lm-evaluation-harness on the
  offline 60-question set (`common`) or common sets from the Hub (mmlu, arc_easy,
  hellaswag; cmmlu, ceval-valid); each task's score ± standard error, and **worse** where
  the tuned score falls more than two of the base's standard errors (**kept** otherwise).
  Without a held-out file, only this is measured.

The same from a shell: `tuitune eval RUN [--data FILE] [--against MODEL] [--checkpoints] [--bench TASKS]`.
"""

    BINDINGS = [
        Binding("r", "run", "Run", id="eval-run", tooltip="Evaluate the target against its baseline"),
        Binding("x", "stop", "Stop", id="eval-stop", tooltip="Stop the evaluation"),
        Binding("g", "mark('good')", "Good", id="eval-good", tooltip="Mark the record good by hand"),
        Binding("b", "mark('bad')", "Bad", id="eval-bad", tooltip="Mark the record bad by hand"),
        HANDOVER_KEYS,  # the registry's: o Open in Chat
    ]

    @dataclass
    class Progress(Message):
        what: str
        done: int
        total: int

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, EvalScreen.Progress) and message.what == self.what

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.folder: Path | None = None
        self.running = False
        self._phase: tuple[str, float] = ("", 0.0)

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="eval-row eval-row-top"):
            yield Label("target", classes="field-label")
            yield Input(self._default_target(), id="eval-target", compact=True,
                        placeholder="run id, RUN:checkpoint-N, adapter or model folder",
                        tooltip="What to evaluate: a run (its final adapter), RUN:checkpoint-N, an adapter "
                        "folder or a model folder.")
            yield Label("data", classes="field-label")
            yield Input("", id="eval-data", compact=True, placeholder="the run's held-out file",
                        tooltip="A conversation JSONL of held-out records (empty: the run's data.eval, else "
                        "the test side of the split whose train side the run trained on).")
        yield Static("", id="eval-heldout")
        with Horizontal(classes="eval-row"):
            yield Label("against", classes="field-label")
            yield Input("", id="eval-against", compact=True, placeholder="base",
                        tooltip="The baseline: empty for the run's base model, or a model folder or "
                        "RUN:checkpoint-N.")
            yield Label("samples", classes="field-label")
            yield NumberInput("", id="eval-samples", compact=True, placeholder="all",
                              tooltip="Evaluate the first N records only (empty: all).")
            yield Label("tokens", classes="field-label")
            yield NumberInput("128", id="eval-tokens", compact=True, tooltip="The longest answer, in tokens.")
            yield Toggle("checkpoints", False, id="eval-checkpoints", compact=True,
                         tooltip="Also the held-out loss of every checkpoint of the run.")
        with Horizontal(classes="eval-row"):
            yield Label("report", classes="field-label")
            yield Select([], prompt="a report in this workspace", id="eval-reports", compact=True,
                         tooltip="Reopen a report written before.")
            from tuitune.eval.bench import DEFAULT_LIMIT, choices

            yield Label("general", classes="field-label")
            yield Select(choices(), prompt="no general ability", id="eval-bench", compact=True,
                         tooltip="General ability, base against tuned (lm-evaluation-harness, at most "
                         f"{DEFAULT_LIMIT} questions a task): the offline set, or common sets from the Hub.")
        yield Static(Text("Press r to evaluate the target against its base model.", style="dim"), id="eval-status")
        yield ProgressBar(id="eval-progress", show_eta=False)
        yield ReportView(id="eval-report")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#eval-progress").display = False
        self.query_one("#eval-report").display = False
        self.refresh_reports()
        # Not a text field: the step's keys (r, x, g, b, o) work at once; Tab reaches the fields.
        self.query_one("#eval-reports").focus()
        self.update_heldout()

    def _default_target(self) -> str:
        runs = self.workspace.run_folders()
        return runs[0].id if runs else ""

    def refresh_reports(self, select: Path | None = None) -> None:
        from tuitune.eval import list_reports

        reports = list_reports(self.app.workspace.root)
        sel = self.query_one("#eval-reports", Select)
        sel.set_options([(f"{d.name}", str(d)) for d, _rep in reports])
        if select is not None:
            sel.value = str(select)

    @on(Select.Changed, "#eval-reports")
    def _report_picked(self, event: Select.Changed) -> None:
        if event.value not in (Select.NULL, None) and (self.folder is None or str(self.folder) != event.value):
            self.open_report(Path(str(event.value)))

    def open_report(self, folder: Path, keep: int | None = None) -> None:
        from tuitune.errors import TuituneError
        from tuitune.eval import read_report

        try:
            report, records = read_report(folder)
        except TuituneError as exc:
            self._status(Text(f"error: {exc}", style="bold red"))
            return
        self.folder = folder
        view = self.query_one(ReportView)
        view.display = True
        view.show(report, records, keep)
        self._status(Text(f"{self._rel(folder)}", style="dim"))
        self.refresh_bindings()
        self.query_one("#eval-records").focus()

    def _rel(self, p: Path) -> str:
        try:
            return str(p.relative_to(self.app.workspace.root))
        except ValueError:
            return str(p)

    # --- which held-out file, before anything runs ----------------------------------------------

    @on(Input.Changed, "#eval-target, #eval-data, #eval-samples")
    def update_heldout(self) -> None:
        target = self._value("eval-target")
        if not target:
            self._heldout(Text("held-out file: shown here once a target is given", style="dim"))
            return
        samples = self._value("eval-samples")
        self.find_heldout(target, self._value("eval-data") or None, int(samples) if samples.isdigit() else None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="eval-heldout", description="held-out file")
    def find_heldout(self, target: str, data: str | None, samples: int | None) -> Text:
        from tuitune.eval.heldout import preview

        ws = self.app.workspace.root
        held = preview(target, ws, data, base=ws)
        return Text.assemble(("held-out ", "bold"), held.line(ws, evaluated=samples, brief=True))

    def _heldout(self, text: Text) -> None:
        self.query_one("#eval-heldout", Static).update(text)

    def _status(self, text: Text) -> None:
        self.query_one("#eval-status", Static).update(text)

    def _value(self, wid: str) -> str:
        return self.query_one(f"#{wid}", Input).value.strip()

    # --- running ------------------------------------------------------------------------------

    def action_run(self) -> None:
        if self.running:
            self._status(Text("Still evaluating: x stops it.", style="yellow"))
            return
        target = self._value("eval-target")
        if not target:
            self._status(Text("Give a target: a run id, RUN:checkpoint-N, an adapter or a model folder.",
                              style="bold red"))
            self.query_one("#eval-target").focus()
            return
        samples, tokens = self._value("eval-samples"), self._value("eval-tokens") or "128"
        self.running = True
        self._phase = ("", time.monotonic())
        bar = self.query_one("#eval-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self._status(Text(f"evaluating {target} …", style="bold"))
        self.refresh_bindings()
        bench = self.query_one("#eval-bench", Select).value
        self.evaluate(target, self._value("eval-data") or None, self._value("eval-against") or None,
                      int(samples) if samples else None, tokens, self.query_one("#eval-checkpoints", Toggle).value,
                      None if bench is Select.NULL or bench is None else str(bench))

    @work(thread=True, exclusive=True, exit_on_error=False, group="eval", description="evaluate")
    def evaluate(self, target, data, against, samples, tokens, checkpoints, bench=None) -> Path:
        from tuitune.eval import default_output, evaluate, plan
        from tuitune.generation import GenerationSettings

        worker = get_current_worker()
        ws = self.app.workspace.root
        settings = GenerationSettings(temperature=0).updated("max_new_tokens", tokens)
        p = plan(target, ws, data=data, against=against, checkpoints=checkpoints, max_samples=samples,
                 need_data=bench is None)
        if bench is not None:   # general ability: each task's data loaded before the model (tuitune.eval.bench)
            from tuitune.eval.bench import plan as bench_plan

            p.bench = bench_plan(bench, ws, base=ws)
        folder, _report = evaluate(p, default_output(ws, p.target.label), settings=settings,
                                   progress=lambda *a: self.post_message(self.Progress(*a)),
                                   cancelled=lambda: worker.is_cancelled)
        return folder

    def on_eval_screen_progress(self, message: Progress) -> None:
        what, started = self._phase
        now = time.monotonic()
        if message.what != what:
            self._phase = (message.what, now)
            started = now
        bar = self.query_one("#eval-progress", ProgressBar)
        bar.update(total=message.total, progress=message.done)
        text = Text(f"{message.what}: {message.done}/{message.total}", style="bold")
        if 0 < message.done < message.total and now > started:
            left = (now - started) / message.done * (message.total - message.done)
            text.append(f" · about {left:.0f} s left", style="dim")
        self._status(text)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "eval-heldout" and not event.worker.is_cancelled:
            if event.state == WorkerState.SUCCESS:
                self._heldout(event.worker.result)
            elif error := failure(event, LABELS):
                self._heldout(Text(f"error: {error}", style="bold red"))
            return
        if event.worker.group != "eval" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR,
                                                               WorkerState.CANCELLED):
            return
        self.running = False
        self.refresh_bindings()
        self.query_one("#eval-progress").display = False
        if event.state == WorkerState.SUCCESS:
            folder = event.worker.result
            self.refresh_reports(select=folder)
            self.open_report(folder)
            return
        error = failure(event, LABELS)
        self._status(Text(f"error: {error}", style="bold red") if error
                     else Text("Stopped; nothing was written.", style="yellow"))

    def action_stop(self) -> None:
        if self.running:
            self.workers.cancel_group(self, "eval")

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "stop":
            return self.running
        if action in ("mark", "open_in"):
            return self.folder is not None
        return True

    # --- the report ---------------------------------------------------------------------------

    def action_mark(self, value: str) -> None:
        from tuitune.errors import TuituneError
        from tuitune.eval import mark

        view = self.query_one(ReportView)
        i = view.current()
        if self.folder is None or i is None:
            return
        current = view.records[i].get("mark")
        try:
            mark(self.folder, i + 1, None if current == value else value)  # the same key again clears it
        except TuituneError as exc:
            self._status(Text(f"error: {exc}", style="bold red"))
            return
        self.open_report(self.folder, keep=i)

    def handover_value(self, kind: str) -> tuple[str, str, str] | None:
        """For `o` (Chat): (baseline, target, the record's prompt), or None without a record."""
        view = self.query_one(ReportView)
        i = view.current()
        if view.report is None or i is None:
            return None
        rep = view.report
        target = rep["target"].get("spec") or rep["target"]["label"]
        baseline = (rep.get("baseline") or {}).get("spec") or rep["target"]["base"]
        return (baseline, target, view.records[i]["prompt"])
