"""What a training dashboard shows, built from a run folder's files (headless: no textual, no torch).

* ``RunView`` ingests events incrementally (``feed``) and keeps only what a dashboard shows:
  bounded loss and eval-loss series, the latest metrics, sample answers per prompt,
  checkpoints and lifecycle events. A run with 100k events stays a few thousand numbers.
* ``RunFollower`` (the run folder's one reader, in runfolder.py) reads ``events.jsonl`` from a
  byte offset in bounded chunks, so the first
  paint of a huge file is quick and the rest streams in; a line still being written is
  left for the next read.
* ``run_rows`` lists the workspace's runs from ``state.json`` only (cheap enough to poll).
* ``GpuProbe`` reads GPU memory and utilisation through NVML when there is a driver.

The TUI's Train screen and any other front end share these; they hold no textual state.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

# RunFollower and parse_lines live with the run folder (its one reader); re-exported for the screens.
from tuitune.train.runfolder import LIVE, RunFolder, RunFollower, list_runs, parse_lines  # noqa: F401

MAX_POINTS = 2000
MAX_LIFECYCLE = 50
MAX_SAMPLE_ROUNDS = 500  # evaluation rounds of sample answers kept (each is a few short strings)


# --- a bounded series --------------------------------------------------------------------------------

class Series:
    """(x, y) points kept to at most ``max_points`` by merging neighbouring buckets.

    While the series is short every point is kept as is. When it would grow past the
    bound, pairs of buckets merge (their mean, at the first x of the pair) and each
    bucket covers twice as many points from then on. The newest point is always shown
    exactly, and the lowest value (with its x) is tracked exactly in ``min``.
    """

    __slots__ = ("max_points", "width", "_x", "_y", "_n", "_open_x", "_open_sum", "_open_n",
                 "last", "min", "count")

    def __init__(self, max_points: int = MAX_POINTS):
        if max_points < 4:
            raise ValueError("max_points must be at least 4")
        self.max_points = max_points
        self.width = 1           # raw points per closed bucket
        self._x: list[float] = []  # closed buckets: first x, mean y, points merged
        self._y: list[float] = []
        self._n: list[int] = []
        self._open_x = 0.0
        self._open_sum = 0.0
        self._open_n = 0
        self.last: tuple[float, float] | None = None
        self.min: tuple[float, float] | None = None
        self.count = 0

    def __len__(self) -> int:
        return len(self.points())

    def add(self, x: float, y: float) -> None:
        self.count += 1
        self.last = (x, y)
        if self.min is None or y < self.min[1]:
            self.min = (x, y)
        if self._open_n == 0:
            self._open_x = x
        self._open_sum += y
        self._open_n += 1
        if self._open_n >= self.width:
            self._x.append(self._open_x)
            self._y.append(self._open_sum / self._open_n)
            self._n.append(self._open_n)
            self._open_n = 0
            self._open_sum = 0.0
            # Room for the open bucket and the exact last point.
            if len(self._x) > self.max_points - 2:
                self._halve()

    def extend(self, points: Iterable[tuple[float, float]]) -> None:
        """``add`` each point (the same result, with less overhead per point)."""
        it = iter(points)
        while True:
            if self._open_n == 0 and self.width == 1:
                # Nothing merged yet: points go straight into closed buckets until the bound.
                room = self.max_points - 2 - len(self._x)
                chunk = list(itertools.islice(it, max(room, 0)))
                if chunk:
                    xs, ys = zip(*chunk)
                    self._x.extend(xs)
                    self._y.extend(ys)
                    self._n.extend([1] * len(chunk))
                    self.count += len(chunk)
                    self.last = chunk[-1]
                    low = min(chunk, key=lambda p: p[1])
                    if self.min is None or low[1] < self.min[1]:
                        self.min = low
                    if len(chunk) < room:
                        return
                point = next(it, None)
                if point is None:
                    return
                self.add(*point)
                continue
            # Merging: fill the open bucket a whole bucket at a time.
            need = self.width - self._open_n
            chunk = list(itertools.islice(it, need))
            if not chunk:
                return
            if len(chunk) < need:
                for x, y in chunk:
                    self.add(x, y)
                return
            # All but the last point join the open bucket; the last one closes it (and may merge).
            head = chunk[:-1]
            if head:
                if self._open_n == 0:
                    self._open_x = head[0][0]
                ys = [y for _, y in head]
                acc = self._open_sum
                for y in ys:  # in order, as add() would: the same sums to the last bit
                    acc += y
                self._open_sum = acc
                self._open_n += len(head)
                self.count += len(head)
                low = min(ys)
                if low < self.min[1]:
                    self.min = head[ys.index(low)]
            self.add(*chunk[-1])

    def _halve(self) -> None:
        xs, ys, ns = self._x, self._y, self._n
        nx, ny, nn = [], [], []
        for i in range(0, len(xs) - 1, 2):
            n = ns[i] + ns[i + 1]
            nx.append(xs[i])
            ny.append((ys[i] * ns[i] + ys[i + 1] * ns[i + 1]) / n)
            nn.append(n)
        if len(xs) % 2:
            nx.append(xs[-1])
            ny.append(ys[-1])
            nn.append(ns[-1])
        self._x, self._y, self._n = nx, ny, nn
        self.width *= 2

    def points(self) -> list[tuple[float, float]]:
        """The points to draw, oldest first; the last one is the newest raw point."""
        pts = list(zip(self._x, self._y))
        if self._open_n:
            pts.append((self._open_x, self._open_sum / self._open_n))
        if self.last is not None:
            if pts and pts[-1][0] >= self.last[0]:
                pts[-1] = self.last  # the newest point is its own bucket: show it exactly
            else:
                pts.append(self.last)
        return pts


# --- the view of one run ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    prompt: str
    answer: str
    step: int | None
    when: str | None


@dataclass(frozen=True)
class SampleRound:
    """One evaluation round: the answers to every evaluation prompt at one step."""

    step: int | None
    when: str | None
    answers: tuple[Sample, ...]

    def label(self) -> str:
        return f"step {self.step}" + (f", {self.when}" if self.when else "")


@dataclass(frozen=True)
class Snapshot:
    """An immutable copy of a ``RunView`` (safe to hand from a thread to the UI)."""

    run_id: str
    status: str
    error: str | None
    step: int
    total_steps: int | None
    epoch: float | None
    loss: float | None
    best_loss: tuple[float, float] | None
    eval_loss: float | None
    lr: float | None
    grad_norm: float | None
    tokens: int | None
    tokens_per_s: float | None
    elapsed: float | None
    eta: float | None
    metrics_time: float | None
    loss_points: tuple[tuple[float, float], ...]
    eval_points: tuple[tuple[float, float], ...]
    samples: tuple[Sample, ...]
    checkpoints: tuple[tuple[int, str], ...]
    lifecycle: tuple[dict, ...]
    events: int
    log_tail: tuple[str, ...] = ()
    gpus: tuple | None = None
    caught_up: bool = True  # False while a long backlog of events is still being read
    sample_rounds: tuple[SampleRound, ...] = ()  # every evaluation round, oldest first

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def fraction(self) -> float | None:
        if not self.total_steps:
            return None
        return max(0.0, min(1.0, self.step / self.total_steps))

    def eta_at(self, now: float) -> float | None:
        """Seconds left, counted down from when the last metrics were written (for a live run)."""
        if self.eta is None:
            return None
        if not self.live or self.metrics_time is None:
            return self.eta if self.live else None
        return max(0.0, self.eta - max(0.0, now - self.metrics_time))

    def elapsed_at(self, now: float) -> float | None:
        if self.elapsed is None:
            return None
        if self.live and self.metrics_time is not None:
            return self.elapsed + max(0.0, now - self.metrics_time)
        return self.elapsed


class RunView:
    """Everything the dashboard shows about one run, updated by ``feed(events)``."""

    def __init__(self, run_id: str = "", max_points: int = MAX_POINTS):
        self.run_id = run_id
        self.max_points = max_points
        self.reset()

    def reset(self) -> None:
        self.loss = Series(self.max_points)
        self.eval = Series(self.max_points)
        self.status = "unknown"
        self.error: str | None = None
        self.step = 0
        self.total_steps: int | None = None
        self.epoch: float | None = None
        self.last_loss: float | None = None
        self.last_eval: float | None = None
        self.lr: float | None = None
        self.grad_norm: float | None = None
        self.tokens: int | None = None
        self.tokens_per_s: float | None = None
        self.elapsed: float | None = None
        self.eta: float | None = None
        self.metrics_time: float | None = None
        self.samples: dict[str, Sample] = {}
        self.rounds: list[SampleRound] = []
        self._elapsed_base = 0.0  # training seconds before the latest resume (for workers that restart the count)
        self.checkpoints: list[tuple[int, str]] = []
        self.lifecycle: list[dict] = []
        self.events = 0

    # --- events ----------------------------------------------------------------------------
    def feed(self, events: Iterable[dict]) -> None:
        loss_add = self.loss.add
        n = 0
        for e in events:
            n += 1
            t = e.get("type")
            if t == "train":
                step = e.get("step")
                loss = e.get("loss")
                if step is not None and loss is not None:
                    loss_add(step, loss)
                    self.last_loss = loss
                if step is not None:
                    self.step = step
                if e.get("total_steps"):
                    self.total_steps = e["total_steps"]
                self.epoch = e.get("epoch", self.epoch)
                self.lr = e.get("lr")
                self.grad_norm = e.get("grad_norm")
                self.tokens = e.get("tokens")
                self.tokens_per_s = e.get("tokens_per_s")
                elapsed = e.get("elapsed")
                if elapsed is not None and self._elapsed_base and elapsed < self._elapsed_base:
                    elapsed += self._elapsed_base  # an older worker restarted its count at the resume
                self.elapsed = elapsed if elapsed is not None else self.elapsed
                self.eta = e.get("eta")
                self.metrics_time = e.get("time")
            elif t == "eval":
                if e.get("step") is not None and e.get("eval_loss") is not None:
                    self.eval.add(e["step"], e["eval_loss"])
                    self.last_eval = e["eval_loss"]
            elif t == "sample":
                answers = []
                for a in e.get("answers") or ():
                    prompt = str(a.get("prompt", ""))
                    s = Sample(prompt, str(a.get("answer", "")), e.get("step"), e.get("when"))
                    self.samples[prompt] = s
                    answers.append(s)
                self.rounds.append(SampleRound(e.get("step"), e.get("when"), tuple(answers)))
                del self.rounds[:-MAX_SAMPLE_ROUNDS]
            elif t == "checkpoint":
                step = e.get("step") or 0
                self.checkpoints.append((step, str(e.get("path", ""))))
                del self.checkpoints[:-MAX_LIFECYCLE]
                # A checkpoint is written at its step: the step shown is never behind it.
                self.step = max(self.step, step)
            elif t == "lifecycle":
                self.lifecycle.append(e)
                del self.lifecycle[:-MAX_LIFECYCLE]
                ev = e.get("event")
                if ev == "train_begin":
                    if e.get("total_steps"):
                        self.total_steps = e["total_steps"]
                    if e.get("step") is not None:
                        self.step = e["step"]
                        if e["step"] == 0:
                            self._elapsed_base = 0.0
                    if e.get("resumed") or (e.get("step") or 0) > 0:
                        # Time continues across a resume; the gap while stopped does not count.
                        self._elapsed_base = self.elapsed or 0.0
                    # The old ETA no longer counts down (the next train event brings a fresh one).
                    self.eta = None
                    self.metrics_time = None
                elif ev in ("stopped", "finished") and e.get("step") is not None:
                    self.step = max(self.step, e["step"])
                elif ev == "resume" and e.get("checkpoint"):
                    # Resumed from a checkpoint: the run continues from that step (perhaps an earlier one).
                    m = re.search(r"checkpoint-(\d+)$", str(e["checkpoint"]))
                    if m:
                        self.step = int(m.group(1))
                        self.checkpoints = [c for c in self.checkpoints if c[0] <= self.step]
        self.events += n

    def feed_bytes(self, data: bytes) -> None:
        """Feed complete JSON lines, as ``feed(parse_lines(data))`` does, only faster.

        Train events are almost every line of a long run, and the dashboard needs only
        (step, loss) from all but the newest. Those pairs are picked out of the chunk by
        one regular-expression scan; every other line, and the newest train line, is
        parsed in full and fed in file order. If the scan does not account for every train
        line (a format it does not know, a null loss), the chunk is parsed line by line.
        """
        lines = data.splitlines()
        is_train = [_TRAIN_MARK in line for line in lines]
        n_train = sum(is_train)
        if n_train < 2:
            self.feed(parse_lines(data))
            return
        found = _TRAIN_RE.findall(data)
        try:
            if len(found) != n_train:
                raise ValueError("unrecognised train lines")
            steps, losses = zip(*found)
            points = list(zip(map(int, steps), map(float, losses)))
        except ValueError:
            self.feed(parse_lines(data))
            return
        last = len(is_train) - 1 - is_train[::-1].index(True)
        before = [line for line, t in zip(lines[:last], is_train) if not t]
        after = [line for line, t in zip(lines[last + 1:], is_train[last + 1:]) if not t]
        self.feed(parse_lines(b"\n".join(before)))
        self.loss.extend(points[:-1])
        self.events += n_train - 1
        self.feed(parse_lines(lines[last]))
        self.feed(parse_lines(b"\n".join(after)))

    def set_state(self, state: dict) -> None:
        """Take status, error and (when newer than the events) step counts from ``RunFolder.status()``."""
        self.status = state.get("status", "unknown")
        self.error = state.get("error")
        if state.get("total_steps") and not self.total_steps:
            self.total_steps = state["total_steps"]
        if (state.get("step") or 0) > self.step:
            self.step = state["step"]

    def snapshot(self, log_tail: Iterable[str] = (), gpus=None, caught_up: bool = True) -> Snapshot:
        return Snapshot(
            run_id=self.run_id, status=self.status, error=self.error, step=self.step,
            total_steps=self.total_steps, epoch=self.epoch, loss=self.last_loss, best_loss=self.loss.min,
            eval_loss=self.last_eval, lr=self.lr, grad_norm=self.grad_norm, tokens=self.tokens,
            tokens_per_s=self.tokens_per_s, elapsed=self.elapsed, eta=self.eta, metrics_time=self.metrics_time,
            loss_points=tuple(self.loss.points()), eval_points=tuple(self.eval.points()),
            samples=tuple(self.samples.values()), checkpoints=tuple(self.checkpoints),
            lifecycle=tuple(self.lifecycle), events=self.events, log_tail=tuple(log_tail),
            gpus=tuple(gpus) if gpus is not None else None, caught_up=caught_up,
            sample_rounds=tuple(self.rounds))


# --- following events.jsonl -------------------------------------------------------------------------

# A train line as the worker writes it (json.dumps: "time" first, then "type", "step", ...).
_TRAIN_MARK = b'"type": "train"'
_TRAIN_RE = re.compile(rb'"type": "train", "step": (-?\d+),[^\n]*?"loss": (-?(?:\d[\d.eE+-]*|NaN|Infinity))[,}]')


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
    state read before them (``status``), whether the file is read to its end, and a snapshot
    for a screen where one is due (None: nothing new, or a backlog still streaming in)."""
    data: bytes
    status: str | None
    caught_up: bool
    snapshot: Snapshot | None


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
                 state_every: float = FOLLOW_EVERY, chunk_bytes: int | None = None, clock=None):
        import time

        self.run = run
        self.follower = RunFollower(run) if chunk_bytes is None else RunFollower(run, chunk_bytes=chunk_bytes)
        self.view = RunView(run_id or run.id)
        self.probe, self.log_lines, self.state_every = probe, log_lines, state_every
        self.clock = clock or time.monotonic
        self._log_key = None
        self._log: list[str] = []
        self._gpus = None
        self._next_state = self._next_gpu = self._next_post = 0.0
        self._first = True
        self._status: str | None = None

    def poll(self) -> Poll:
        view, t = self.view, self.clock()
        changed = self._first
        if t >= self._next_state:
            self._next_state = t + self.state_every
            before = (view.status, view.error, view.step, view.total_steps)
            state = self.run.status()
            self._status = state.get("status")
            view.set_state(state)
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
        return Poll(data, self._status, self.follower.at_end, snap)


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


# --- formatting -------------------------------------------------------------------------------------

def format_duration(seconds: float | None) -> str:
    """3s, 4m05s, 2h10m, 3d04h; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_age(seconds: float | None) -> str:
    """A coarse age for a table: 12s, 5m, 3.2h, 4d."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.0f}d"


def format_steps(step: int, total: int | None) -> str:
    return f"{step}/{total}" if total else str(step)


def format_loss(loss: float | None) -> str:
    return "-" if loss is None else f"{loss:.4f}"


# --- GPUs -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GpuStat:
    index: int
    name: str
    used_gib: float
    total_gib: float
    util: int | None


class GpuProbe:
    """GPU memory and utilisation through NVML (``pynvml``); ``read()`` is None without a GPU.

    The same GPUs, numbered the same way, as the Environment step (``doctor.gpu_inventory``):
    those ``CUDA_VISIBLE_DEVICES`` leaves visible."""

    def __init__(self):
        self._nvml = None
        self._failed = False

    def _init(self):
        if self._nvml is None and not self._failed:
            from tuitune.doctor import _nvml

            self._nvml = _nvml()
            self._failed = self._nvml is None
        return self._nvml

    def read(self) -> list[GpuStat] | None:
        from tuitune.doctor import visible_gpu_indices

        nvml = self._init()
        if nvml is None:
            return None
        try:
            out = []
            for n, i in enumerate(visible_gpu_indices(nvml)):
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                name = nvml.nvmlDeviceGetName(h)
                name = name.decode() if isinstance(name, bytes) else str(name)
                mem = nvml.nvmlDeviceGetMemoryInfo(h)
                try:
                    util = int(nvml.nvmlDeviceGetUtilizationRates(h).gpu)
                except Exception:
                    util = None
                out.append(GpuStat(n, name, mem.used / 2**30, mem.total / 2**30, util))
            return out or None
        except Exception:
            return None


def format_gpus(gpus) -> str:
    if not gpus:
        return "no GPU"
    parts = []
    for g in gpus:
        util = f" {g.util}%" if g.util is not None else ""
        parts.append(f"GPU{g.index} {g.used_gib:.1f}/{g.total_gib:.0f} GiB{util}")
    return "  ".join(parts)
