"""Step 4, Train: the workspace's runs, and a live dashboard of the selected one.

Training is a separate, detached process (``tuitune.train.launcher``); this screen is a
window onto its run folder. A thread worker follows ``events.jsonl`` by byte offset in
bounded chunks (``tuitune.train.dashboard``) and posts whole snapshots that coalesce
(``can_replace``), so a run with 100k events opens at once and streams in, and a busy run
never floods the UI. The runs table polls ``state.json`` every two seconds. Quitting
the app never touches a run; reopening shows it as it is, from its files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Group
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Log, ProgressBar, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState, get_current_worker

from screens.base import StepScreen
from screens.steps import STEPS
from screens.widgets.train_chart import LossChart
from screens.widgets.train_modals import ConfirmModal, NewRunModal, ResumeModal, one_line
from tuitune.render import RUN_STATUS_STYLE
from tuitune.gpus import GpuProbe, format_gpus
from tuitune.train.dashboard import Snapshot, format_age, format_duration, format_loss, format_steps
from tuitune.train.watch import FOLLOW_EVERY, LOG_LINES, RunRow, RunWatcher, run_rows
from tuitune.train.runfolder import LIVE, RunFolder

RUNS_EVERY = 2.0      # seconds between polls of the runs' state.json
WORKSPACE_WIDE = "*"  # a message about the workspace, not one run (kept when the selection moves)

_STEP_KEYS = {s.key for s in STEPS}
# The runs table's columns: label, key, narrowest width.
COLUMNS = (("run", "id", 3), ("status", "status", 8), ("step", "step", 7), ("loss", "loss", 6), ("age", "age", 4))


def _handover_bindings() -> list[Binding]:
    """`m` / `c` open the selected run in Merge / Chat, once those steps exist."""
    out = []
    if "merge" in _STEP_KEYS:
        out.append(Binding("m", "open_in('merge')", "Merge", id="train-merge"))
    if "chat" in _STEP_KEYS:
        out.append(Binding("c", "open_in('chat')", "Chat", id="train-chat"))
    return out


class TrainScreen(StepScreen):
    STEP = "train"
    HELP = """\
# Train

Your runs, newest first, and a dashboard of the one under the cursor: loss by step
(train and eval), learning rate, tokens/s, time left, GPU memory, the model's answers
to your evaluation prompts, and the end of `train.log`.

A run is a separate process: it keeps going when you quit tuitune or lose SSH, and
this screen shows it where it is whenever you come back.

- **n** starts a run from a config in `configs/` (make one in the Config step), with an
  optional run name.
- **s** asks the run to checkpoint and stop after its current step; **r** resumes a
  stopped or failed run from the checkpoint you pick (the newest first).
- **w** saves a checkpoint at the next step.
- **K** (or **S**) kills the run at once, after you confirm: no checkpoint is written.
- **d** deletes the run's folder, after you confirm (never a running run).
- **m** / **c** open the run in Merge / Chat, which pick it up as their source.
- **g**, **a**, **l** show the loss chart, the sample answers, the log.
- **v** switches the loss chart between a linear and a log scale.
- **[** / **]** show the sample answers of an earlier / later evaluation round.

Steps, elapsed time and the ETA come from the run folder and continue across resumes;
the ETA uses a smoothed time per step.

The same from a shell: `tuitune train CONFIG [--name N]`,
`tuitune runs list|follow|stop|save|resume [--checkpoint N]|delete`.
"""

    # Kill and Save are kept out of the footer (it reads whole at 80 columns with the rest);
    # F1 help and the palette list them.
    BINDINGS = [
        Binding("n", "new_run", "New", id="train-new", tooltip="Start a run from a config in configs/"),
        Binding("s", "stop", "Stop", id="train-stop", tooltip="Checkpoint and stop after the current step"),
        Binding("K,shift+k", "kill", "Kill", key_display="K", id="train-kill", show=False,
                tooltip="End the run now (asks first)"),
        Binding("S,shift+s", "kill", "Kill", show=False, id="train-kill-shift-s"),
        Binding("w", "save", "Save", id="train-save", show=False, tooltip="Write a checkpoint at the next step"),
        Binding("r", "resume", "Resume", id="train-resume", tooltip="Continue from a checkpoint (pick one)"),
        Binding("d", "delete", "Delete", id="train-delete", tooltip="Delete the run's folder (asks first)"),
        *_handover_bindings(),
        Binding("v", "log_scale", "Log scale", show=False, id="train-log-scale",
                tooltip="Loss chart: linear or log scale"),
        Binding("left_square_bracket", "sample_round(-1)", "Older samples", show=False, id="train-samples-older"),
        Binding("right_square_bracket", "sample_round(1)", "Newer samples", show=False, id="train-samples-newer"),
        Binding("g", "tab('tab-loss')", "Loss chart", show=False, id="train-tab-loss"),
        Binding("a", "tab('tab-samples')", "Sample answers", show=False, id="train-tab-samples"),
        Binding("l", "tab('tab-log')", "Log", show=False, id="train-tab-log"),
    ]

    # --- messages from the workers --------------------------------------------------------------

    @dataclass
    class RunsListed(Message):
        rows: list[RunRow]

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, TrainScreen.RunsListed)

    @dataclass
    class RunUpdated(Message):
        """The selected run as it is now (a whole snapshot: a newer one supersedes it)."""

        snapshot: Snapshot

        def can_replace(self, message: Message) -> bool:
            return (isinstance(message, TrainScreen.RunUpdated)
                    and message.snapshot.run_id == self.snapshot.run_id)

    @dataclass
    class ControlDone(Message):
        text: str
        run_id: str

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_id: str | None = None
        self.snapshot: Snapshot | None = None
        self.rows: list[RunRow] = []
        self._want_run: str | None = None
        self._message_about: str | None = None
        self._message_live_only = False  # the message is about a live run ("left running"): cleared when it ends
        self._seen_handover: str | None = None
        self._round: int | None = None  # the sample round shown (an index), None: the newest

    # --- injectable for tests and snapshots ------------------------------------------------------

    def now(self) -> float:
        """The time ages and ETAs count from (``app.clock`` if the app has one)."""
        return getattr(self.app, "clock", time.time)()

    @property
    def gpu_probe(self):
        """How GPU memory and utilisation are read (``app.gpu_probe`` if the app has one)."""
        probe = getattr(self.app, "gpu_probe", None)
        if probe is None:
            probe = self.app.gpu_probe = GpuProbe()
        return probe

    # --- layout ---------------------------------------------------------------------------------

    def compose_body(self) -> ComposeResult:
        table = DataTable(id="train-runs", cursor_type="row", zebra_stripes=True)
        table.tooltip = "The workspace's runs, newest first. Arrows pick the run the dashboard shows."
        yield table
        with Horizontal(id="train-progress-row"):
            yield Static("", id="train-status")
            yield ProgressBar(id="train-progress", show_eta=False)
        yield Static("", id="train-stats")
        yield Static("", id="train-error")
        yield Static("", id="train-message")
        with TabbedContent(id="train-tabs", initial="tab-loss"):
            with TabPane("Loss", id="tab-loss"):
                yield LossChart(id="train-chart")
            with TabPane("Samples", id="tab-samples"):
                with VerticalScroll(id="train-samples-scroll"):
                    yield Static("", id="train-samples")
            with TabPane("Log", id="tab-log"):
                log = Log(id="train-log", max_lines=LOG_LINES)
                log.tooltip = "The end of the run's train.log (everything the process printed)."
                yield log

    def on_mount(self) -> None:
        self._widths: tuple[int, ...] | None = None
        self._show_empty()
        self.list_runs()
        self._runs_timer = self.set_interval(RUNS_EVERY, self.list_runs)
        self._paused = False

    def on_screen_suspend(self) -> None:
        # Another step is shown (not just a dialog over this one): stop reading files nobody sees.
        if self.app.current_mode != self.STEP:
            self._paused = True
            self._runs_timer.pause()
            self.workers.cancel_group(self, "train-follow")

    def on_screen_resume(self) -> None:
        if not self.is_mounted or not hasattr(self, "_runs_timer"):
            return
        # Another step may hand a run over (app.selected_run, as `m`/`c` here do): show it,
        # once; a handover already seen does not pull the cursor back.
        wanted = getattr(self.app, "selected_run", None)
        if wanted and wanted != self._seen_handover:
            self._seen_handover = wanted
            if wanted != self.run_id:
                self._want_run = wanted
        if self._paused:
            self._paused = False
            self._runs_timer.resume()
            if self.run_id:
                self.follow(self.run_id, str(self.workspace.runs / self.run_id))
        self.list_runs()

    # --- the runs table -------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="train-runs", description="list runs")
    def list_runs(self) -> None:
        self.post_message(self.RunsListed(run_rows(self.workspace.root)))

    def on_train_screen_runs_listed(self, message: RunsListed) -> None:
        self.rows = message.rows
        table = self.query_one("#train-runs", DataTable)
        now = self.now()
        keys = [r.id for r in message.rows]
        current = [k.value for k in table.rows]
        cells = {r.id: self._cells(r, now) for r in message.rows}
        # Columns get explicit widths, fitted to what they hold; when that changes the table
        # is rebuilt (auto widths would be measured only later, on idle, so a frame drawn
        # in between could show the header and the rows at different widths).
        widths = [min(40, max([min_w, *(c[i].cell_len for c in cells.values())]))
                  for i, (_, _, min_w) in enumerate(COLUMNS)]
        # The run id gets what the other columns leave (2 cells of padding each, a scrollbar);
        # a longer id wraps onto a second line of its row instead of being cut.
        room = (table.size.width or 80) - sum(widths[1:]) - 2 * len(COLUMNS)
        widths[0] = max(COLUMNS[0][2], min(max(c[0].cell_len for c in cells.values()) if cells else 0, room))
        widths = tuple(widths)
        if keys == current and widths == self._widths:
            for r in message.rows:
                for (_, col, _), value in zip(COLUMNS, cells[r.id]):
                    table.update_cell(r.id, col, value)
        else:
            keep = self._want_run or self.run_id
            table.clear(columns=True)
            for (label, key, _), width in zip(COLUMNS, widths):
                table.add_column(label, key=key, width=width)
            self._widths = widths
            for r in message.rows:
                table.add_row(*cells[r.id], key=r.id, height=None)
            if keep in keys:
                table.move_cursor(row=keys.index(keep))
        if self._want_run in keys:
            table.move_cursor(row=keys.index(self._want_run))
            self.select_run(self._want_run)
            self._want_run = None
        elif self.run_id not in keys:
            self.select_run(keys[table.cursor_row] if keys else None)
        if not keys:
            self._show_empty()
        self._render_stats()

    @staticmethod
    def _cells(r: RunRow, now: float) -> tuple[Text, ...]:
        status = Text(r.status, style=RUN_STATUS_STYLE.get(r.status, ""))
        age = format_age(now - r.created) if r.created else "-"
        return (Text(r.id, overflow="fold"), status, Text(format_steps(r.step, r.total_steps), justify="right"),
                Text(format_loss(r.last_loss), justify="right"), Text(age, justify="right"))

    @on(DataTable.RowHighlighted, "#train-runs")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row != event.data_table.cursor_row:
            return  # a stale event: the cursor moved on (the table was refilled) before it arrived
        if event.row_key is not None and event.row_key.value:
            self.select_run(event.row_key.value)

    def select_run(self, run_id: str | None) -> None:
        if run_id == self.run_id:
            return
        self.run_id = run_id
        self.snapshot = None
        self._round = None
        if run_id is None:
            self.workers.cancel_group(self, "train-follow")
            self._show_empty()
            return
        if self._message_about not in (run_id, WORKSPACE_WIDE):
            self._message("")  # what was said about another run
        self.query_one("#train-status", Static).update(Text(f"{run_id}: reading…", style="dim"))
        self.follow(run_id, str(self.workspace.runs / run_id))

    # --- following the selected run -------------------------------------------------------------

    def follow(self, run_id: str, path: str) -> None:
        """Follow a run's files in a thread worker (replacing the one following another run)."""
        self._follow(run_id, path, self.gpu_probe)

    @work(thread=True, exclusive=True, exit_on_error=False, group="train-follow", description="follow a run")
    def _follow(self, run_id: str, path: str, probe) -> None:
        worker = get_current_worker()
        watcher = RunWatcher(RunFolder(Path(path)), run_id, probe=probe, log_lines=LOG_LINES)
        while not worker.is_cancelled:
            poll = watcher.poll()
            if poll.snapshot is not None:
                self.post_message(self.RunUpdated(poll.snapshot))
            if not poll.caught_up:
                continue  # more to read: the next chunk now
            # Caught up: look again in a moment (in slices, so a cancel is quick).
            deadline = time.monotonic() + FOLLOW_EVERY
            while not worker.is_cancelled and time.monotonic() < deadline:
                time.sleep(0.05)

    def on_train_screen_run_updated(self, message: RunUpdated) -> None:
        snap = message.snapshot
        if snap.run_id != self.run_id:
            return  # a late message about the run selected before
        self.snapshot = snap
        self._render_stats()
        progress = self.query_one("#train-progress", ProgressBar)
        progress.display = True
        if snap.total_steps:
            progress.update(total=snap.total_steps, progress=snap.step)
        else:
            progress.update(total=None, progress=0)
        best = f"  best {snap.best_loss[1]:.4f} @ {snap.best_loss[0]:g}" if snap.best_loss else ""
        self.query_one("#train-chart", LossChart).set_data(snap.loss_points, snap.eval_points,
                                                           f"loss{best}")
        self._show_samples()
        self._show_log(snap.log_tail)
        if self._message_live_only and not snap.live and self._message_about == snap.run_id:
            self._message("")  # "left running" no longer holds once the run has ended

    def _show_samples(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        rounds = snap.sample_rounds
        index = None if self._round is None or not rounds else min(self._round, len(rounds) - 1)
        self.query_one("#train-samples", Static).update(_samples_text(snap, index))

    def _show_log(self, lines) -> None:
        log = self.query_one("#train-log", Log)
        if tuple(lines) == getattr(self, "_log_lines", None):
            return
        self._log_lines = tuple(lines)
        # Follow the end only when the reader is there (scrolling up to read stays put).
        at_end = log.scroll_y >= log.max_scroll_y - 1
        y = log.scroll_y
        log.clear()
        log.write_lines(lines or ["train.log is empty so far"], scroll_end=at_end)
        if not at_end:
            log.scroll_to(y=y, animate=False)

    def _render_stats(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        now = self.now()
        status = Text()
        status.append(f"{snap.status}", style=RUN_STATUS_STYLE.get(snap.status, "bold"))
        status.append(f"  step {format_steps(snap.step, snap.total_steps)}")
        if snap.epoch is not None:
            status.append(f"  epoch {snap.epoch:.2f}")
        if not snap.caught_up:
            status.append("  reading events…", style="dim")
        self.query_one("#train-status", Static).update(status)
        stats = Text()

        def field(label: str, value: str, style: str = "") -> None:
            if stats.plain and not stats.plain.endswith("\n"):
                stats.append("  ")
            if label:
                stats.append(f"{label} ", style="dim")
            stats.append(value, style=style)

        field("loss", format_loss(snap.loss), "bold")
        if snap.eval_loss is not None:
            field("eval", format_loss(snap.eval_loss))
        field("lr", "-" if snap.lr is None else f"{snap.lr:.2e}")
        field("tok/s", "-" if snap.tokens_per_s is None else f"{snap.tokens_per_s:,.0f}")
        if snap.live:
            field("ETA", format_duration(snap.eta_at(now)), "bold")
        stats.append("\n")
        field("elapsed", format_duration(snap.elapsed_at(now)))
        if snap.checkpoints:
            field("", Path(snap.checkpoints[-1][1]).name)
        field("", format_gpus(snap.gpus), "" if snap.gpus else "dim")
        self.query_one("#train-stats", Static).update(stats)
        error = self.query_one("#train-error", Static)
        error.display = bool(snap.error)
        if snap.error:
            error.update(Text(snap.error, style="bold red" if snap.status == "failed" else "yellow"))
            error.tooltip = snap.error

    def _show_empty(self) -> None:
        if self.rows:
            return
        self.query_one("#train-error").display = False
        self.query_one("#train-status", Static).update(Text("No runs yet.", style="bold"))
        self.query_one("#train-stats", Static).update(
            Text("Press n to start one from a config in configs/ (or `tuitune train configs/NAME.yaml`).",
                 style="dim"))
        self.query_one("#train-progress", ProgressBar).display = False

    # --- actions --------------------------------------------------------------------------------

    def _message(self, text: str | Text, error: bool = False, about: str | None = None,
                 live_only: bool = False) -> None:
        """A line under the dashboard (wrapped, never cut): what an action did, or why it could not."""
        self._message_about = about or self.run_id
        self._message_live_only = live_only
        if isinstance(text, str):
            text = Text(text, style="bold red" if error else "green")
        line = self.query_one("#train-message", Static)
        line.update(text)
        line.tooltip = text.plain or None  # the whole line, if the screen is too narrow for it

    def _selected(self) -> str | None:
        if not self.run_id:
            self._message("No run selected: press n to start one.", error=True)
        return self.run_id

    def action_new_run(self) -> None:
        def started(run_id: str | None) -> None:
            if run_id:
                self._want_run = run_id
                self._message(f"started run {run_id}; it keeps going if you quit tuitune", about=run_id)
                self.list_runs()

        self.app.push_screen(NewRunModal(self.workspace), started)

    def action_stop(self) -> None:
        if run_id := self._selected():
            self.control("stop", run_id)

    def action_save(self) -> None:
        if run_id := self._selected():
            self.control("save", run_id)

    def action_resume(self) -> None:
        run_id = self._selected()
        if not run_id:
            return
        snap = self.snapshot
        steps = self._checkpoint_steps(run_id)
        if (snap is None or snap.run_id != run_id or snap.live or snap.status == "finished"
                or len(steps) < 2):
            # Nothing to choose: the engine resumes from the newest, or says why it cannot.
            self.control("resume", run_id)
            return

        def picked(step: int | None) -> None:
            if step is None:
                self._message(Text(f"run {run_id} not resumed", style="dim"), about=run_id)
            else:
                self.control("resume", run_id, step)

        self.app.push_screen(ResumeModal(run_id, steps), picked)

    def _checkpoint_steps(self, run_id: str) -> list[int]:
        run = RunFolder(self.workspace.runs / run_id)
        return [int(p.name.rsplit("-", 1)[-1]) for p in run.list_checkpoints()]

    def action_delete(self) -> None:
        run_id = self._selected()
        if not run_id:
            return
        snap = self.snapshot
        if snap is not None and snap.run_id == run_id and snap.live:
            self._message(f"run {run_id} is {snap.status}: stop it first (s), then delete it", error=True)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.control("delete", run_id)
            else:
                self._message(Text(f"run {run_id} kept", style="dim"), about=run_id)

        self.app.push_screen(ConfirmModal(f"Delete run {run_id}?\n\nIts folder goes: checkpoints, adapter, "
                                          "events and log. This cannot be undone."), answered)

    def action_log_scale(self) -> None:
        chart = self.query_one("#train-chart", LossChart)
        chart.set_log_scale(not chart.log_scale)
        self.action_tab("tab-loss")

    def action_sample_round(self, delta: int) -> None:
        snap = self.snapshot
        self.action_tab("tab-samples")
        if snap is None or not snap.sample_rounds:
            return
        last = len(snap.sample_rounds) - 1
        current = last if self._round is None else min(self._round, last)
        new = max(0, min(last, current + delta))
        self._round = None if new == last else new  # at the newest: follow new rounds as they come
        self._show_samples()

    def action_kill(self) -> None:
        run_id = self._selected()
        if not run_id:
            return
        snap = self.snapshot
        if snap is not None and snap.run_id == run_id and not snap.live:
            self._message(f"run {run_id} is not running (it is {snap.status})", error=True)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.control("kill", run_id)
            else:
                self._message(Text(f"run {run_id} left running", style="dim"), about=run_id, live_only=True)

        self.app.push_screen(ConfirmModal(f"Kill run {run_id} now?\n\nIts processes end at once; no checkpoint "
                                      "is written (resume continues from the last one)."), answered)

    def action_tab(self, tab: str) -> None:
        self.query_one("#train-tabs", TabbedContent).active = tab

    @on(TabbedContent.TabActivated, "#train-tabs")
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tab-log":
            # While hidden the log had no size to scroll in: show its end now.
            log = self.query_one("#train-log", Log)
            log.call_after_refresh(log.scroll_end, animate=False)

    def action_open_in(self, step: str) -> None:
        """Hand the selected run to another step (Merge, Chat) and switch to it."""
        run_id = self._selected()
        if not run_id:
            return
        self.app.selected_run = self._seen_handover = run_id  # the other step takes it on resume
        try:
            self.app.switch_mode(step)
        except Exception as exc:  # the step is not built yet
            self._message(f"cannot open {step}: {one_line(exc)}", error=True)

    @work(thread=True, exit_on_error=False, group="train-control", description="run control")
    def control(self, what: str, run_id: str, checkpoint: int | None = None) -> None:
        from tuitune.train import launcher

        ws = self.workspace.root
        if what == "stop":
            launcher.stop_run(ws, run_id)
            text = f"asked run {run_id} to stop: it checkpoints after its current step, then exits"
        elif what == "kill":
            launcher.stop_run(ws, run_id, kill=True)
            text = f"killed run {run_id}"
        elif what == "save":
            launcher.save_now(ws, run_id)
            text = f"asked run {run_id} to save a checkpoint at its next step"
        elif what == "resume":
            run, pid = launcher.resume_run(ws, run_id, checkpoint=checkpoint)
            frm = Path(run.read_state().get("resumed_from") or "").name
            text = f"resumed run {run_id} from {frm} (pid {pid})"
        elif what == "delete":
            launcher.delete_run(ws, run_id)
            # About no run left to select: it stays when the cursor moves on to another run.
            self.post_message(self.ControlDone(f"deleted run {run_id}", WORKSPACE_WIDE))
            return
        else:  # pragma: no cover - a typo in a binding
            raise ValueError(what)
        self.post_message(self.ControlDone(text, run_id))

    def on_train_screen_control_done(self, message: ControlDone) -> None:
        self._message(message.text, about=message.run_id)
        self.list_runs()

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        group = event.worker.group
        if group == "train-control":
            self._message(one_line(event.worker.error), error=True)
        elif group in ("train-follow", "train-runs"):
            self._message(f"could not read the runs: {one_line(event.worker.error)}", error=True)


def _samples_text(snap: Snapshot, index: int | None = None):
    """One evaluation round's answers (the newest unless ``index``), with where it sits in the history."""
    if not snap.samples:
        return Text("No sample answers yet: the run answers the config's evaluation prompts "
                    "before training, every `evaluation.every` steps, and at the end.", style="dim")
    parts = []
    rounds = snap.sample_rounds
    samples = snap.samples
    if rounds:
        i = len(rounds) - 1 if index is None else index
        samples = rounds[i].answers
        head = Text()
        head.append(f"round {i + 1} of {len(rounds)}: {rounds[i].label()}", style="bold")
        head.append("  ([ older, ] newer)", style="dim")
        parts.append(head)
    for s in samples:
        t = Text()
        t.append("Q ", style="bold cyan")
        t.append(s.prompt, style="bold")
        if rounds:
            t.append("\n")  # the round's step is in its heading
        else:
            when = f"step {s.step}" + (f", {s.when}" if s.when else "")
            t.append(f"  ({when})\n", style="dim")
        t.append("A ", style="bold green")
        t.append(s.answer or "(empty)")
        t.append("\n")
        parts.append(t)
    return Group(*parts)
