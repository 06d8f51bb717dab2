"""Step 4, Train: the workspace's runs, and a live dashboard of the selected one.

Layer twin: ``tuitune/commands/train.py`` is the same step's CLI verb (one name, two layers).

Training is a separate, detached process (``tuitune.train.launcher``); this screen is a
window onto its run folder. A thread worker follows ``events.jsonl`` by byte offset in
bounded chunks (``tuitune.train.runview``) and posts whole snapshots that coalesce
(``can_replace``), so a run with 100k events opens at once and streams in, and a busy run
never floods the UI. The runs table polls ``state.json`` every two seconds. Quitting
the app never touches a run; reopening shows it as it is, from its files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable
from textual.worker import Worker

from screens.base import HANDOVER_KEYS, StepScreen
from screens.widgets.train.dashboard import RunDashboard, watch
from screens.widgets.train.modals import ConfirmModal, NewRunModal, OverlayModal, ResumeModal
from screens.widgets.train.runs_table import RunsTable
from screens.workers import failure
from tuitune.gpus import GpuProbe
from tuitune.train.runview import Snapshot
from tuitune.train.runfolder import RunFolder
from tuitune.train.watch import LOG_LINES, RunRow, RunWatcher, run_rows

RUNS_EVERY = 2.0      # seconds between polls of the runs' state.json
WORKSPACE_WIDE = "*"  # a message about the workspace, not one run (kept when the selection moves)

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
  optional run name; there, **p** probes the highlighted config first (a few steps on this
  machine: fits? when would it end?). **p** here opens it and probes at once.
- **s** asks the run to checkpoint and stop after its current step; **r** resumes a
  stopped or failed run from the checkpoint you pick (the newest first).
- **w** saves a checkpoint at the next step.
- **K** (or **S**) kills the run at once, after you confirm: no checkpoint is written.
- **d** deletes the run's folder, after you confirm (never a running run).
- **m** / **c** open the run in Merge / Chat, which pick it up as their source.
- **g**, **a**, **l** show the loss chart, the sample answers, the log.
- **v** switches the loss chart between a linear and a log scale.
- **e** (a GRPO run) draws the reward on the chart instead of the loss; **e** again: the loss.
- **o** draws another run's loss over this one's (pick the run; the legend names both);
  **o** again takes it away.
- **[** / **]** show the sample answers of an earlier / later evaluation round.

Steps, elapsed time and the ETA come from the run folder and continue across resumes;
the ETA uses a smoothed time per step.

The same from a shell: `tuitune train CONFIG [--name N]`,
`tuitune runs list|follow|stop|save|resume [--checkpoint N]|delete|compare A B`.
"""

    # Kill, Save and a GRPO run's Reward are kept out of the footer (it reads whole at 80 columns
    # with the rest, q Quit included); F1 help and the palette list them.
    BINDINGS = [
        Binding("n", "new_run", "New", id="train-new", tooltip="Start a run from a config in configs/"),
        Binding("p", "new_run(True)", "Probe", show=False, id="train-probe",
                tooltip="Probe a config before starting a run from it: fits? ETA?"),
        Binding("s", "stop", "Stop", id="train-stop", tooltip="Checkpoint and stop after the current step"),
        Binding("K,shift+k", "kill", "Kill", key_display="K", id="train-kill", show=False,
                tooltip="End the run now (asks first)"),
        Binding("S,shift+s", "kill", "Kill", show=False, id="train-kill-shift-s"),
        Binding("w", "save", "Save", id="train-save", show=False, tooltip="Write a checkpoint at the next step"),
        Binding("r", "resume", "Resume", id="train-resume", tooltip="Continue from a checkpoint (pick one)"),
        Binding("d", "delete", "Delete", id="train-delete", tooltip="Delete the run's folder (asks first)"),
        HANDOVER_KEYS,  # the registry's: m Merge, c Chat
        Binding("v", "log_scale", "Log scale", show=False, id="train-log-scale",
                tooltip="Loss chart: linear or log scale"),
        Binding("o", "overlay", "Compare", show=False, id="train-overlay",
                tooltip="Draw another run's loss over this one's (o again takes it away)"),
        Binding("left_square_bracket", "sample_round(-1)", "Older samples", show=False, id="train-samples-older"),
        Binding("right_square_bracket", "sample_round(1)", "Newer samples", show=False, id="train-samples-newer"),
        Binding("g", "tab('tab-loss')", "Loss chart", show=False, id="train-tab-loss"),
        Binding("a", "tab('tab-samples')", "Sample answers", show=False, id="train-tab-samples"),
        Binding("l", "tab('tab-log')", "Log", show=False, id="train-tab-log"),
        Binding("e", "reward_chart", "Reward", show=False, id="train-reward-chart",
                tooltip="Chart: a GRPO run's reward instead of its loss (e again: the loss)"),
    ]

    def action_reward_chart(self) -> None:
        self.dashboard.toggle_reward()
        self.action_tab("tab-loss")

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "reward_chart":  # offered (footer, palette) only for a run with a reward: GRPO
            return any(d.has_reward for d in self.query(RunDashboard))
        return super().check_action(action, parameters)

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
        yield RunsTable(id="train-runs")
        yield RunDashboard(id="train-dashboard")

    @property
    def dashboard(self) -> RunDashboard:
        return self.query_one(RunDashboard)

    def on_mount(self) -> None:
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
            self.dashboard.pause_overlay()

    def on_screen_resume(self) -> None:
        if not self.is_mounted or not hasattr(self, "_runs_timer"):
            return
        # Another step may hand a run over: show it, once; a hand-over already taken (or given
        # by `m`/`c` here) does not pull the cursor back.
        if (handed := self.take_handover()) and handed.value != self.run_id:
            self._want_run = handed.value
        if self._paused:
            self._paused = False
            self._runs_timer.resume()
            if self.run_id:
                self.follow(self.run_id, str(self.workspace.runs / self.run_id))
            self.dashboard.resume_overlay()
        self.list_runs()

    # --- the runs table -------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="train-runs", description="list runs")
    def list_runs(self) -> None:
        self.post_message(self.RunsListed(run_rows(self.workspace.root)))

    def on_train_screen_runs_listed(self, message: RunsListed) -> None:
        self.rows = message.rows
        table = self.query_one(RunsTable)
        table.fill(message.rows, self.now(), keep=self._want_run or self.run_id)
        keys = [r.id for r in message.rows]
        if self._want_run in keys:
            table.move_cursor(row=keys.index(self._want_run))
            self.select_run(self._want_run)
            self._want_run = None
        elif self.run_id not in keys:
            self.select_run(keys[table.cursor_row] if keys else None)
        if not keys:
            self._show_empty()
        if self.dashboard.overlay_id not in (None, *keys):
            self.dashboard.overlay(None)  # its run was deleted
        self._render_stats()

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
        self.dashboard.select(run_id)
        if run_id is None:
            self.workers.cancel_group(self, "train-follow")
            self.dashboard.pause_overlay()
            self._show_empty()
            return
        if self._message_about not in (run_id, WORKSPACE_WIDE):
            self._message("")  # what was said about another run
        self.follow(run_id, str(self.workspace.runs / run_id))

    # --- following the selected run -------------------------------------------------------------

    def follow(self, run_id: str, path: str) -> None:
        """Follow a run's files in a thread worker (replacing the one following another run)."""
        self._follow(run_id, path, self.gpu_probe)

    @work(thread=True, exclusive=True, exit_on_error=False, group="train-follow", description="follow a run")
    def _follow(self, run_id: str, path: str, probe) -> None:
        watcher = RunWatcher(RunFolder(Path(path)), run_id, probe=probe, log_lines=LOG_LINES)
        watch(watcher, lambda snap: self.post_message(self.RunUpdated(snap)))

    def on_train_screen_run_updated(self, message: RunUpdated) -> None:
        snap = message.snapshot
        if snap.run_id != self.run_id:
            return  # a late message about the run selected before
        self.snapshot = snap
        self.dashboard.show(snap, self.now())
        if self._message_live_only and not snap.live and self._message_about == snap.run_id:
            self._message("")  # "left running" no longer holds once the run has ended

    def _render_stats(self) -> None:
        if self.snapshot is not None:
            self.dashboard.show_stats(self.snapshot, self.now())

    def _show_empty(self) -> None:
        if not self.rows:
            self.dashboard.show_empty()

    # --- actions --------------------------------------------------------------------------------

    def _message(self, text: str | Text, error: bool = False, about: str | None = None,
                 live_only: bool = False) -> None:
        """A line under the dashboard (wrapped, never cut): what an action did, or why it could not."""
        self._message_about = about or self.run_id
        self._message_live_only = live_only
        if isinstance(text, str):
            text = Text(text, style="bold red" if error else "green")
        self.dashboard.say(text)

    def _selected(self) -> str | None:
        if not self.run_id:
            self._message("No run selected: press n to start one.", error=True)
        return self.run_id

    def action_new_run(self, probe: bool = False) -> None:
        def started(run_id: str | None) -> None:
            if run_id:
                self._want_run = run_id
                self._message(f"started run {run_id}; it keeps going if you quit tuitune", about=run_id)
                self.list_runs()

        self.app.push_screen(NewRunModal(self.workspace, probe=probe), started)

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

        self._confirm("delete", run_id, f"Delete run {run_id}?\n\nIts folder goes: checkpoints, adapter, "
                      "events and log. This cannot be undone.", f"run {run_id} kept")

    def action_log_scale(self) -> None:
        self.dashboard.toggle_log_scale()
        self.action_tab("tab-loss")

    def action_overlay(self) -> None:
        """Pick another run whose loss the chart draws over this one's; with one drawn, take it away."""
        self.action_tab("tab-loss")
        if (gone := self.dashboard.overlay_id) is not None:
            self.dashboard.overlay(None)
            self._message(Text(f"overlay of {gone} taken away", style="dim"), about=WORKSPACE_WIDE)
            return
        if not (run_id := self._selected()):
            return
        if not (others := [r for r in self.rows if r.id != run_id]):
            self._message("No other run to compare with: start one with n.", error=True)
            return

        def picked(other: str | None) -> None:
            if other:
                self.dashboard.overlay(other, self.workspace.runs / other)
                self._message(Text(f"overlaid: {other}'s loss (o takes it away)", style="dim"),
                              about=WORKSPACE_WIDE)

        self.app.push_screen(OverlayModal(run_id, others), picked)

    def action_sample_round(self, delta: int) -> None:
        self.action_tab("tab-samples")
        if self.snapshot is not None:
            self.dashboard.show_samples(self.snapshot, delta)

    def action_kill(self) -> None:
        run_id = self._selected()
        if not run_id:
            return
        snap = self.snapshot
        if snap is not None and snap.run_id == run_id and not snap.live:
            self._message(f"run {run_id} is not running (it is {snap.status})", error=True)
            return

        self._confirm("kill", run_id, f"Kill run {run_id} now?\n\nIts processes end at once; no checkpoint "
                      "is written (resume continues from the last one).", f"run {run_id} left running",
                      live_only=True)

    def _confirm(self, what: str, run_id: str, question: str, declined: str, live_only: bool = False) -> None:
        """Ask ``question``: yes runs the control ``what`` on the run, no says ``declined``."""
        def answered(yes: bool | None) -> None:
            if yes:
                self.control(what, run_id)
            else:
                self._message(Text(declined, style="dim"), about=run_id, live_only=live_only)

        self.app.push_screen(ConfirmModal(question), answered)

    def action_tab(self, tab: str) -> None:
        self.dashboard.tab(tab)

    def handover_value(self, kind: str) -> str | None:
        """The selected run, for `m` / `c` (Merge, Chat); None (and a hint) when none is."""
        return self._selected()

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
        error = failure(event)
        if error is None:
            return
        group = event.worker.group
        if group == "train-control":
            self._message(error, error=True)
        elif group in ("train-follow", "train-runs"):
            self._message(f"could not read the runs: {error}", error=True)
