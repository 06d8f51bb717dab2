"""Following a run folder for a front end: one watcher (``RunWatcher``) for the Train screen and
``tuitune runs follow``, the workspace's runs list (``run_rows``, from ``state.json`` only), a run's
status in one record (``run_status``, ``tuitune runs status``), and whether a live run is stalled
(``judge_stall``, which all of them use)."""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tuitune.train.runview import RunView, Snapshot, stalled_text
from tuitune.train.runfolder import CHUNK_BYTES, LIVE, RunFolder, RunFollower, list_runs


# --- watching a run ---------------------------------------------------------------------------------

FOLLOW_EVERY = 0.5  # seconds between looks at a run's state once caught up
GPU_EVERY = 2.0
CATCH_UP_EVERY = 1.0  # seconds between snapshots while reading a long file's backlog (each costs a redraw)
LOG_LINES = 200


def _stat_key(path: Path):
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


@dataclass
class Poll:
    """What one :meth:`RunWatcher.poll` found: the complete event lines read (``data``), the
    last ``state.json`` read, at or before them (``state``), whether the file is read to its end,
    and a snapshot for a screen where one is due (None: nothing new, or a backlog still
    streaming in)."""
    data: bytes
    state: dict
    caught_up: bool
    snapshot: Snapshot | None

    @property
    def status(self) -> str | None:
        return self.state.get("status")


class RunWatcher:
    """One way to follow a run folder, for the Train screen and ``tuitune runs follow``.

    Each :meth:`poll` looks at ``state.json`` (at most every ``state_every`` seconds) *before*
    reading the next chunk of ``events.jsonl``: the worker appends its last event before it
    writes an ended status, so once a poll's status is ended and the read is caught up, every
    event has been seen. ``train.log``'s tail and the GPUs (``probe``) are read when they
    change and every ``GPU_EVERY`` seconds; a snapshot is made when something changed, at most
    every ``CATCH_UP_EVERY`` seconds while a backlog is read (the first at once).
    """

    def __init__(self, run: RunFolder, run_id: str | None = None, probe=None, log_lines: int = LOG_LINES,
                 state_every: float = FOLLOW_EVERY, chunk_bytes: int = CHUNK_BYTES, clock=None):
        self.run = run
        self.follower = RunFollower(run, chunk_bytes=chunk_bytes)
        self.view = RunView(run_id or run.id)
        self.probe, self.log_lines, self.state_every = probe, log_lines, state_every
        self.clock = clock or time.monotonic
        self._log_key = None
        self._log: list[str] = []
        self._gpus = None
        self._next_state = self._next_gpu = self._next_post = 0.0
        self._first = True
        self._state: dict = {}

    def poll(self) -> Poll:
        view, t = self.view, self.clock()
        changed = self._first
        if t >= self._next_state:
            self._next_state = t + self.state_every
            before = (view.status, view.error, view.step, view.total_steps, view.stalled_since)
            self._state = judge_stall(self.run, self.run.status())
            view.set_state(self._state)
            changed |= before != (view.status, view.error, view.step, view.total_steps, view.stalled_since)
            if self.log_lines:
                key = _stat_key(self.run.log_path)
                if key != self._log_key:
                    self._log_key = key
                    self._log = self.run.log_tail(self.log_lines)
                    changed = True
        data = self.follower.read_bytes()
        if self.follower.reset:
            view.reset()
        view.feed_bytes(data)
        changed |= bool(data)
        if self.probe is not None and t >= self._next_gpu:
            self._next_gpu = t + GPU_EVERY
            new = self.probe.read() if view.status in LIVE or self._first else self._gpus
            changed |= new != self._gpus
            self._gpus = new
        snap = None
        if changed and (self.follower.at_end or self._first or t >= self._next_post):
            snap = view.snapshot(self._log, self._gpus, caught_up=self.follower.at_end)
            self._next_post = t + CATCH_UP_EVERY
        self._first = False
        return Poll(data, self._state, self.follower.at_end, snap)


# --- the runs list ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunRow:
    id: str
    status: str
    step: int
    total_steps: int | None
    last_loss: float | None
    created: float | None
    error: str | None
    path: str
    method: str | None = None
    model: str | None = None
    #: A running run that is stalled: the time of its last sign of life (see ``judge_stall``); else None.
    stalled_since: float | None = None

    def shown_status(self, now: float | None = None) -> str:
        """The status as a list shows it: ``stalled 12m03s`` (since the last step) for a stalled run (its
        style is RUN_STATUS_STYLE's of the first word)."""
        return stalled_text(self.status, self.stalled_since, time.time() if now is None else now)


def run_rows(workspace) -> list[RunRow]:
    """The workspace's runs, newest first, from their ``state.json`` (and the worker's liveness)."""
    rows = []
    for r in list_runs(workspace):
        st = judge_stall(r, r.status())
        rows.append(RunRow(r.id, st.get("status", "unknown"), st.get("step") or 0, st.get("total_steps"),
                           st.get("last_loss"), st.get("created"), st.get("error"), str(r.path),
                           st.get("method"), st.get("model"), st.get("stalled_since")))
    return rows


# --- a stalled run ----------------------------------------------------------------------------------

#: notify.stall_minutes' default (tuitune.config.schema_notify; a test holds them equal). Read here from the
#: run's frozen config.yaml as plain YAML, so that listing runs needs no pydantic.
STALL_MINUTES = 10.0

_TRAIN_LINE = b'"type": "train"'
_ELAPSED = re.compile(rb'"elapsed": (-?[0-9][0-9.eE+-]*)')
_slowest_cache: dict[str, tuple[int, float]] = {}


def stall_seconds(run: RunFolder) -> float:
    """The run's ``notify.stall_minutes`` in seconds (its default where the config says nothing)."""
    try:
        import yaml

        notify = (yaml.safe_load(run.config_path.read_text(encoding="utf-8")) or {}).get("notify") or {}
        minutes = float(notify.get("stall_minutes") or STALL_MINUTES)
    except Exception:  # no config, or not one this reader understands: the default
        minutes = STALL_MINUTES
    return minutes * 60


def slowest_interval(run: RunFolder) -> float:
    """The most training seconds between two logged steps of one session of the run (0 with fewer than
    two). Read only for a run that has been quiet for its stall time; kept while events.jsonl does not grow."""
    try:
        size = run.events_path.stat().st_size
    except OSError:
        return 0.0
    key = str(run.events_path)
    if key in _slowest_cache and _slowest_cache[key][0] == size:
        return _slowest_cache[key][1]
    slowest, prev = 0.0, None
    with open(run.events_path, "rb") as fh:
        for line in fh:
            if b'"event": "train_begin"' in line:
                prev = None  # a new session: the time it was stopped is no interval
            elif _TRAIN_LINE in line and (m := _ELAPSED.search(line)):
                elapsed = float(m.group(1))
                if prev is not None:
                    slowest = max(slowest, elapsed - prev)
                prev = elapsed
    _slowest_cache[key] = (size, slowest)
    return slowest


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def judge_stall(run: RunFolder, state: dict, now: float | None = None) -> dict:
    """``state`` (from ``RunFolder.status()``) with ``stalled_since`` where a running run is stalled.

    The worker's watchdog (tuitune.train.watchdog) writes ``stalled_since`` when no step has finished for
    ``notify.stall_minutes`` past the slowest step so far: a hung collective or data loader leaves its
    thread running. A worker that cannot write it, its process stopped (SIGSTOP, ctrl+z in --foreground,
    a debugger) so that its watchdog is stopped too, is judged here from its files: no sign of life
    (state.json, events.jsonl or train.log written) for the stall time past the slowest interval between
    two logged steps; ``stalled_since`` is then its last sign of life and ``stalled_by`` says ``reader``.
    A running worker is left to its watchdog, which sees each step (the files show only the logged ones,
    and nothing of a long evaluation).
    """
    if state.get("status") != "running":
        return {**state, "stalled_since": None} if state.get("stalled_since") else state
    if state.get("stalled_since"):
        return state
    now = time.time() if now is None else now
    last = max(float(state.get("updated") or 0), _mtime(run.events_path), _mtime(run.log_path))
    limit = stall_seconds(run)
    if now - last <= limit or not _stopped(state.get("worker_pid") or state.get("pid")):
        return state
    if now - last <= limit + slowest_interval(run):
        return state
    return {**state, "stalled_since": last, "stalled_by": "reader"}


def _stopped(pid) -> bool:
    """Whether process ``pid`` is stopped (by a signal or a tracer): it runs nothing, its watchdog neither."""
    try:
        import psutil

        return psutil.Process(int(pid)).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except Exception:
        return False


# --- one run's status, for scripts ------------------------------------------------------------------

STATUS_TAIL = 256 * 1024  # bytes of events.jsonl that runs status reads (at least the newest train event)


def run_status(run: RunFolder, now: float | None = None, probe=None) -> dict:
    """One run as ``tuitune runs status`` gives it (its events read once, through ``RunWatcher``):
    status (``stalled`` for a stalled run, with ``stalled_for`` seconds since its last step), step and
    total steps, last loss, ETA, tokens/s (a live run's recent rate, an ended run's average), elapsed
    training time, the newest complete checkpoint, the worker's peak memory (state.json's: bytes, of the
    GPU or RSS) and, for a live run where ``probe`` (a ``GpuProbe``) sees GPUs, their memory and
    utilisation."""
    # The state once, before the events (as read_run reads a run): a run that has ended has written its last
    # event by then. Every figure shown is the newest train event's (or the state's), so only the tail of a
    # long events.jsonl is read (100k events: 0.1 s, not 1.5 s); all of it where the tail holds no train event.
    for tail in (True, False):
        watcher = RunWatcher(run, log_lines=0, state_every=float("inf"))
        tail = tail and watcher.follower.start_at_tail(STATUS_TAIL)
        while not (poll := watcher.poll()).caught_up:
            pass
        if watcher.view.metrics_time is not None or not tail:
            break
    snap, state = watcher.view.snapshot(), poll.state
    now = time.time() if now is None else now
    stalled = snap.status == "running" and snap.stalled_since is not None
    rate, recent = snap.rate
    latest = run.latest_checkpoint()
    gpus = probe.read() if probe is not None and snap.live else None
    return {
        "id": run.id, "status": "stalled" if stalled else snap.status,
        "stalled_for": round(now - snap.stalled_since, 1) if stalled else None,
        "step": snap.step, "total_steps": snap.total_steps, "loss": snap.loss,
        "eta": None if stalled else snap.eta_at(now), "tokens_per_s": rate, "tokens_per_s_recent": recent,
        "elapsed": snap.elapsed_at(now), "last_checkpoint": str(latest) if latest else None,
        "peak_memory": state.get("peak_memory"), "peak_memory_of": state.get("peak_memory_of"),
        "gpus": [asdict(g) for g in gpus] if gpus else None,
        "error": snap.error, "path": str(run.path),
    }
