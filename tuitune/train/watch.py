"""Following a run folder for a front end: one watcher (``RunWatcher``) for the Train screen and
``tuitune runs follow``, and the workspace's runs list (``run_rows``, from ``state.json`` only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuitune.train.runview import RunView, Snapshot
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
        import time

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
            before = (view.status, view.error, view.step, view.total_steps)
            self._state = self.run.status()
            view.set_state(self._state)
            changed |= before != (view.status, view.error, view.step, view.total_steps)
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


def run_rows(workspace) -> list[RunRow]:
    """The workspace's runs, newest first, from their ``state.json`` (and the worker's liveness)."""
    rows = []
    for r in list_runs(workspace):
        st = r.status()
        rows.append(RunRow(r.id, st.get("status", "unknown"), st.get("step") or 0, st.get("total_steps"),
                           st.get("last_loss"), st.get("created"), st.get("error"), str(r.path),
                           st.get("method"), st.get("model")))
    return rows
