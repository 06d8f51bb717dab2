"""What the worker watches and tells while a run trains: a stall, each evaluation, and the run's end.

* ``Watchdog`` (a Trainer callback with a thread) marks a run **stalled** when no step has finished
  for ``notify.stall_minutes`` past the slowest step so far (a hung collective, a dead data loader, a
  reward function that never returns). Evaluation batches, micro-batches, logs and saves count as signs
  of life, so a long evaluation is no stall. What it writes, for any reader to show:

  - the event ``{"type": "lifecycle", "event": "stalled", "step": N, "idle": s, "slowest_step": s,
    "since": t}`` (``since``: the time of the last sign of life), and state.json's ``stalled_since: t``;
  - when steps come back, ``{"type": "lifecycle", "event": "resumed progress", "step": N,
    "stalled_for": s}`` and ``stalled_since: null``.

* ``RunNotifier`` sends ``notify:``'s messages (tuitune.notify.Sender, from a thread): the run's summary
  line, built from the run folder by the reader ``runs compare`` and the dashboard use (``read_run``)
  and formatted as ``runs follow`` formats a run (tuitune.train.formatting).
"""

from __future__ import annotations

import threading
import time

from transformers import TrainerCallback

from tuitune.notify import Sender, notify_settings
from tuitune.train.compare import figures, read_run
from tuitune.train.formatting import format_duration, format_loss, format_rate, format_steps
from tuitune.train.runfolder import RunFolder


def _best(last, value, step) -> str:
    """`` (best 1.2345 at step 80)`` where the best is not the last."""
    return "" if value is None or value == last else f" (best {format_loss(value)} at step {step:g})"


def run_summary(run: RunFolder) -> str:
    """One line: the run's status and step, last and best loss (and eval loss), its tokens, time and
    tokens/s, and by status: where the output is (finished), the error and how to resume (failed), the
    checkpoint to resume from (stopped)."""
    snap = read_run(run)
    f = figures(snap)
    state = run.read_state()
    head = f"run {run.id} {'' if snap.live else snap.status + ' '}at step {format_steps(snap.step, snap.total_steps)}"
    parts = []
    if f["loss"] is not None:
        parts.append(f"loss {format_loss(f['loss'])}{_best(f['loss'], f['best_loss'], f['best_loss_step'])}")
    if f["eval_loss"] is not None:
        parts.append(f"eval loss {format_loss(f['eval_loss'])}{_best(f['eval_loss'], f['best_eval_loss'], f['best_eval_step'])}")
    if snap.tokens and snap.average_tokens_per_s:  # as `runs follow` ends a run
        parts.append(f"{snap.tokens:,} tokens in {format_duration(snap.elapsed)}: "
                     f"{format_rate(snap.average_tokens_per_s)} tok/s")
    elif snap.elapsed:
        parts.append(format_duration(snap.elapsed))
    line = head + (f": {', '.join(parts)}" if parts else "")
    latest = run.latest_checkpoint()
    if snap.status == "finished" and state.get("output"):
        line += f"; output {state['output']}"
    elif snap.status == "failed":
        error = snap.error or "no error line"
        line += f"; error: {error}"
        if "runs resume" not in error:
            line += (f"; resume with `tuitune runs resume {run.id}` (from {latest.name})" if latest else
                     "; no checkpoint was saved, so it starts again from the beginning")
    elif snap.status == "stopped":
        line += f"; resume with `tuitune runs resume {run.id}`" + (f" (from {latest.name})" if latest else "")
    return line


class RunNotifier:
    """The run's messages to ``notify.urls`` for the events of ``notify.events``; ``enabled`` False (a
    process other than rank 0) sends nothing. Warnings go to ``log`` (the run's train.log)."""

    def __init__(self, run: RunFolder, cfg, log, enabled: bool = True):
        self.run = run
        self.settings = notify_settings(cfg)
        self.log = log
        self.sender = Sender(list(self.settings.urls), self.settings.secrets_file, warn=log) if enabled else None

    def describe(self, telemetry: bool) -> str:
        """The log line that says what this run sends out (URLs as written: ``${NAME}``, never a value)."""
        s = self.settings
        told = (f"notifications ({', '.join(s.events)}) to {', '.join(s.urls)}" if s.urls and s.events
                else "no notifications (notify.urls is empty)")
        hub = "hub telemetry on (notify.telemetry)" if telemetry else "hub telemetry off (HF_HUB_DISABLE_TELEMETRY=1)"
        return f"sends out: {told}; {hub}"

    def tell(self, event: str, before: str = "", after: str = "") -> None:
        """Send ``event``'s message: the run's summary line (read in the sending thread, so training
        never waits for it), with ``before`` and ``after`` around it."""
        if self.sender is None or not self.settings.wants(event):
            return
        run = self.run

        def body() -> str:
            return before + run_summary(run) + after
        self.sender.send(event, f"tuitune: run {run.id} {event}", body)

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()


class Watchdog(TrainerCallback):
    """Marks the run stalled when no step finishes for ``stall_seconds`` past the slowest step so far,
    and back when steps return; tells ``notifier`` (stalled, each evaluation)."""

    def __init__(self, run: RunFolder, notifier: RunNotifier | None, stall_seconds: float):
        self.run = run
        self.notifier = notifier
        self.margin = stall_seconds
        self.slowest = 0.0
        self.last: float | None = None   # time.monotonic() of the last sign of life
        self.step = 0
        self.step_start: float | None = None
        self.stalled_since: float | None = None   # wall time, while stalled
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the watching thread -----------------------------------------------------------------
    def _watch(self) -> None:
        every = max(0.05, min(5.0, self.margin / 5))
        while not self._stop.wait(every):
            with self._lock:
                if self.last is None or self.stalled_since is not None:
                    continue
                idle = time.monotonic() - self.last
                if idle <= self.slowest + self.margin:
                    continue
                self.stalled_since = time.time() - idle
                step, slowest = self.step, self.slowest
                # Under the lock, the state before the event: a reader that sees the event sees the
                # state too, and a step that comes back meanwhile (_alive) is not overwritten by this mark.
                self.run.write_state(stalled_since=self.stalled_since)
                self.run.append_event({"type": "lifecycle", "event": "stalled", "step": step,
                                       "idle": round(idle, 1), "slowest_step": round(slowest, 2),
                                       "since": self.stalled_since})
            if self.notifier is not None:
                self.notifier.tell("stalled", before=f"no step for {format_duration(idle)} (the slowest so far "
                                   f"took {format_duration(slowest)}): ",
                                   after=f"; `tuitune runs follow {self.run.id}` shows it, "
                                         f"`tuitune runs stop {self.run.id} --kill` ends it")

    def _alive(self, state) -> None:
        """A sign of life: the clock restarts; a stalled run is marked back."""
        with self._lock:
            self.last = time.monotonic()
            self.step = state.global_step
            since, self.stalled_since = self.stalled_since, None
            if since is not None:  # as in _watch: under the lock, the state before the event
                self.run.write_state(stalled_since=None)
                self.run.append_event({"type": "lifecycle", "event": "resumed progress", "step": state.global_step,
                                       "stalled_for": round(time.time() - since, 1)})

    def close(self) -> None:
        """Stop watching (the run ended, or failed); a stalled mark is taken back."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            since, self.stalled_since = self.stalled_since, None
            if since is not None:
                self.run.write_state(stalled_since=None)

    # --- the callback API --------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kw):
        if self.run.read_state().get("stalled_since") is not None:  # an earlier session killed while stalled
            self.run.write_state(stalled_since=None)
        self._alive(state)
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="tuitune-watchdog", daemon=True)
            self._thread.start()

    def on_step_begin(self, args, state, control, **kw):
        self.step_start = time.monotonic()
        self._alive(state)

    def on_step_end(self, args, state, control, **kw):
        if self.step_start is not None:
            self.slowest = max(self.slowest, time.monotonic() - self.step_start)
        self._alive(state)

    def on_substep_end(self, args, state, control, **kw):
        self._alive(state)

    def on_prediction_step(self, args, state, control, **kw):
        self._alive(state)

    def on_log(self, args, state, control, **kw):
        self._alive(state)

    def on_save(self, args, state, control, **kw):
        self._alive(state)

    def on_evaluate(self, args, state, control, **kw):
        self._alive(state)
        if self.notifier is not None:
            self.notifier.tell("evaluation")

    def on_train_end(self, args, state, control, **kw):
        self.close()
