"""The Train step's run dashboard: the selected run's status, progress and numbers, a message
line, and its loss chart (with another run's loss overlaid, if one is picked), sample answers
and the end of its log, in tabs. A GRPO run also shows its reward (mean±spread, each reward
function's), completion length, KL and clipped share; its chart can show the reward instead
of the loss (``toggle_reward``), and its sampled completions are sample rounds with their rewards.

The screen hands it whole snapshots (``show``); the dashboard only draws them. It keeps
a few bits of view state: which evaluation round of sample answers is shown, whether the
chart shows the reward, and the log lines last written (rewritten only when they change).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Group
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Log, ProgressBar, Static, TabbedContent, TabPane
from textual.worker import Worker, get_current_worker

from screens.widgets.train.chart import LossChart
from screens.workers import failure
from tuitune.gpus import format_gpus
from tuitune.render import RUN_STATUS_STYLE
from tuitune.train.runview import Snapshot
from tuitune.train.formatting import (GRPO_SHOWN, format_duration, format_grpo, format_loss, format_rate,
                                      format_rewards, format_scores, format_steps)
from tuitune.train.runfolder import RunFolder
from tuitune.train.watch import FOLLOW_EVERY, LOG_LINES, RunWatcher


def watch(watcher: RunWatcher, post) -> None:
    """In a thread worker: ``post(snapshot)`` for each new snapshot of ``watcher``'s run, until cancelled."""
    worker = get_current_worker()
    while not worker.is_cancelled:
        poll = watcher.poll()
        if poll.snapshot is not None:
            post(poll.snapshot)
        if not poll.caught_up:
            continue  # more to read: the next chunk now
        # Caught up: look again in a moment (in slices, so a cancel is quick).
        deadline = time.monotonic() + FOLLOW_EVERY
        while not worker.is_cancelled and time.monotonic() < deadline:
            time.sleep(0.05)


class RunDashboard(Vertical):
    """One run as it is now: ``show(snapshot, now)``; ``say`` writes the message line.

    ``overlay(run_id, path)`` follows another run (in its own thread worker, through the
    same ``RunWatcher``) and draws its train loss over the chart.
    """

    @dataclass
    class OverlayUpdated(Message, bubble=False):
        snapshot: Snapshot

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, RunDashboard.OverlayUpdated)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._round: int | None = None  # the sample round shown (an index), None: the newest
        self._log_lines: tuple[str, ...] | None = None
        self.overlay_id: str | None = None  # the run whose train loss the chart draws over this one's
        self._overlay_path: Path | None = None
        self._overlay_snap: Snapshot | None = None
        self.chart_reward = False  # the chart shows the reward (of a run that has one) instead of the loss
        self.has_reward = False    # the run shown logs a reward (a GRPO run): the screen offers the toggle
        self._snap: Snapshot | None = None

    def compose(self) -> ComposeResult:
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

    # --- what the screen asks -------------------------------------------------------------------

    def show(self, snap: Snapshot, now: float) -> None:
        """Draw ``snap``: numbers, progress, chart, sample answers, log."""
        self.show_stats(snap, now)
        progress = self.query_one("#train-progress", ProgressBar)
        progress.display = True
        if snap.total_steps:
            progress.update(total=snap.total_steps, progress=snap.step)
        else:
            progress.update(total=None, progress=0)
        self._snap = snap
        if snap.has_reward != self.has_reward:
            self.has_reward = snap.has_reward
            self.screen.refresh_bindings()  # the footer offers the reward chart only for a run with a reward
        self._draw_chart()
        self.show_samples(snap)
        self._show_log(snap.log_tail)

    @property
    def showing_reward(self) -> bool:
        """Whether the chart shows the reward now (asked for, and the run has one)."""
        return self.chart_reward and self.has_reward

    def toggle_reward(self) -> None:
        """The chart: the reward instead of the loss, or back (for a run without a reward, the loss)."""
        self.chart_reward = not self.chart_reward
        self._draw_chart()

    def _draw_chart(self) -> None:
        chart, snap = self.query_one(LossChart), self._snap
        self.query_one("#train-tabs", TabbedContent).get_tab("tab-loss").label = (
            "Reward" if self.showing_reward else "Loss")
        if snap is None:
            return
        other = self._overlay_snap
        if self.showing_reward:
            best = max(snap.reward_points, key=lambda p: p[1]) if snap.reward_points else None
            best_text = f"  best {best[1]:.3f} @ {best[0]:g}" if best else ""
            chart.set_data(snap.reward_points, snap.eval_reward_points, f"reward{best_text}", snap.run_id)
            overlay = other.reward_points if other is not None else ()
        else:
            best_text = f"  best {snap.best_loss[1]:.4f} @ {snap.best_loss[0]:g}" if snap.best_loss else ""
            chart.set_data(snap.loss_points, snap.eval_points, f"loss{best_text}", snap.run_id)
            overlay = other.loss_points if other is not None else ()
        if self.overlay_id is not None:
            chart.set_overlay(self.overlay_id, overlay)

    def select(self, run_id: str | None) -> None:
        """Another run (or none) is selected: its newest sample round first; say its files are being read."""
        self._round = None
        if run_id is not None:
            self.query_one("#train-status", Static).update(Text(f"{run_id}: reading…", style="dim"))

    def show_empty(self) -> None:
        """No runs in the workspace: say how to start one."""
        self.query_one("#train-error").display = False
        self.query_one("#train-status", Static).update(Text("No runs yet.", style="bold"))
        self.query_one("#train-stats", Static).update(
            Text("Press n to start one from a config in configs/ (or `tuitune train configs/NAME.yaml`).",
                 style="dim"))
        self.query_one("#train-progress", ProgressBar).display = False

    def say(self, text: Text) -> None:
        """The message line (wrapped, never cut): what an action did, or why it could not."""
        line = self.query_one("#train-message", Static)
        line.update(text)
        line.tooltip = text.plain or None  # the whole line, if the screen is too narrow for it

    def show_stats(self, snap: Snapshot, now: float) -> None:
        """The status line and the numbers (ages and the ETA count from ``now``)."""
        status = Text()
        shown = snap.shown_status(now)  # "stalled 12m03s" for a stalled run
        status.append(shown, style=RUN_STATUS_STYLE.get(shown.split()[0], "bold"))
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

        figures = dict(snap.rewards)
        field("loss", format_loss(snap.loss), "bold")
        for label, value in format_rewards(figures):  # a preference run's (DPO, ORPO)
            field(label, value, "bold")
        if snap.eval_loss is not None:
            field("eval", format_loss(snap.eval_loss))
        field("lr", "-" if snap.lr is None else f"{snap.lr:.2e}")
        field("tok/s", format_rate(*snap.rate))  # a live run's recent rate, an ended run's whole-run average
        if snap.live:
            field("ETA", format_duration(snap.eta_at(now)), "bold")
        stats.append("\n")
        # A GRPO run's: its reward and each function's on a line, the completions' length, KL and clipped share after.
        grpo = format_grpo(figures)
        others = {label for _key, label, _fmt in GRPO_SHOWN}
        for label, value in grpo:
            if label not in others:
                field(label, value, "bold" if label == "reward" else "")
        if grpo:
            stats.append("\n")
        field("elapsed", format_duration(snap.elapsed_at(now)))
        for label, value in grpo:
            if label in others:
                field(label, value)
        if snap.checkpoints:
            field("", Path(snap.checkpoints[-1][1]).name)
        field("", format_gpus(snap.gpus), "" if snap.gpus else "dim")
        self.query_one("#train-stats", Static).update(stats)
        error = self.query_one("#train-error", Static)
        error.display = bool(snap.error)
        if snap.error:
            error.update(Text(snap.error, style="bold red" if snap.status == "failed" else "yellow"))
            error.tooltip = snap.error

    def show_samples(self, snap: Snapshot, delta: int = 0) -> None:
        """The sample answers of the round shown, ``delta`` rounds older (-) or newer (+)."""
        rounds = snap.sample_rounds
        if delta and rounds:
            last = len(rounds) - 1
            current = last if self._round is None else min(self._round, last)
            new = max(0, min(last, current + delta))
            self._round = None if new == last else new  # at the newest: follow new rounds as they come
        index = None if self._round is None or not rounds else min(self._round, len(rounds) - 1)
        self.query_one("#train-samples", Static).update(samples_text(snap, index))

    def overlay(self, run_id: str | None, path: str | Path | None = None) -> None:
        """Follow run ``run_id`` (its folder ``path``) and draw its train loss over the chart; None: no overlay."""
        self.pause_overlay()
        self.overlay_id, self._overlay_path, self._overlay_snap = run_id, path, None
        self.query_one(LossChart).set_overlay(run_id)
        self.resume_overlay()

    def pause_overlay(self) -> None:
        """Stop following the overlaid run (its step is not shown); ``resume_overlay`` goes on."""
        self.workers.cancel_group(self, "train-overlay")

    def resume_overlay(self) -> None:
        if self.overlay_id is not None:
            self._follow_overlay(self.overlay_id, str(self._overlay_path))

    @work(thread=True, exclusive=True, exit_on_error=False, group="train-overlay", description="follow a run")
    def _follow_overlay(self, run_id: str, path: str) -> None:
        watcher = RunWatcher(RunFolder(Path(path)), run_id, log_lines=0)
        watch(watcher, lambda snap: self.post_message(self.OverlayUpdated(snap)))

    def on_run_dashboard_overlay_updated(self, message: OverlayUpdated) -> None:
        if message.snapshot.run_id == self.overlay_id:
            self._overlay_snap = message.snapshot
            self._draw_chart()

    @on(Worker.StateChanged)
    def _overlay_failed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "train-overlay" and (error := failure(event)) is not None:
            self.say(Text(f"could not read {self.overlay_id}: {error}", style="bold red"))

    def toggle_log_scale(self) -> None:
        chart = self.query_one(LossChart)
        chart.set_log_scale(not chart.log_scale)

    def tab(self, tab: str) -> None:
        self.query_one("#train-tabs", TabbedContent).active = tab

    # --- inside ---------------------------------------------------------------------------------

    def _show_log(self, lines) -> None:
        log = self.query_one("#train-log", Log)
        if tuple(lines) == self._log_lines:
            return
        self._log_lines = tuple(lines)
        # Follow the end only when the reader is there (scrolling up to read stays put).
        at_end = log.scroll_y >= log.max_scroll_y - 1
        y = log.scroll_y
        log.clear()
        log.write_lines(lines or ["train.log is empty so far"], scroll_end=at_end)
        if not at_end:
            log.scroll_to(y=y, animate=False)

    @on(TabbedContent.TabActivated, "#train-tabs")
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tab-log":
            # While hidden the log had no size to scroll in: show its end now.
            log = self.query_one("#train-log", Log)
            log.call_after_refresh(log.scroll_end, animate=False)


def samples_text(snap: Snapshot, index: int | None = None):
    """One evaluation round's answers (the newest unless ``index``), with where it sits in the history."""
    if not snap.samples:
        if snap.has_reward:
            return Text("No sampled completions yet: a GRPO run shows some of its completions with their "
                        "rewards at its first step, every `evaluation.every` steps, and at the end.", style="dim")
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
    for i, s in enumerate(samples):
        t = Text()
        scored = s.rewards or s.reward is not None  # a GRPO run's sampled completion
        if not (scored and i and samples[i - 1].prompt == s.prompt):  # a group's completions: its prompt once
            t.append("Q ", style="bold cyan")
            t.append(s.prompt, style="bold")
            if rounds:
                t.append("\n")  # the round's step is in its heading
            else:
                when = f"step {s.step}" + (f", {s.when}" if s.when else "")
                t.append(f"  ({when})\n", style="dim")
        t.append("A ", style="bold green")
        t.append(s.answer or "(empty)")
        if scored:
            t.append("\n  " + format_scores(s.reward, dict(s.rewards)), style="magenta")
        if not scored or i + 1 == len(samples) or samples[i + 1].prompt != s.prompt:
            t.append("\n")
        parts.append(t)
    return Group(*parts)
