"""What a training dashboard shows, built from a run folder's files (headless: no textual, no torch).

* ``RunView`` ingests events incrementally (``feed``) and keeps only what a dashboard shows:
  bounded loss and eval-loss series (``Series``, tuitune.train.series), a GRPO run's reward
  series, the latest metrics, sample answers per prompt (a GRPO run's sampled completions with
  their rewards), checkpoints and lifecycle events. A run with 100k events stays a few thousand numbers.
* ``RunFollower`` (the run folder's one reader, in runfolder.py) reads ``events.jsonl`` from
  a byte offset in bounded chunks, so the first paint of a huge file is quick and the rest
  streams in; a line still being written is left for the next read.
* ``RunWatcher`` and ``run_rows`` (tuitune.train.watch) follow a run and list the runs;
  ``GpuProbe`` (tuitune.gpus) reads GPU memory and utilisation.

The TUI's Train screen and any other front end share these; they hold no textual state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from tuitune.gpus import GpuProbe, GpuStat, format_gpus  # noqa: F401 (re-exported: the GPUs live in tuitune.gpus)
# RunFollower and parse_lines live with the run folder (its one reader); re-exported for the screens.
from tuitune.train.runfolder import LIVE, RunFollower, parse_lines  # noqa: F401
from tuitune.train.series import MAX_POINTS, Series  # noqa: F401 (re-exported: the series has its own module)

MAX_LIFECYCLE = 50
MAX_SAMPLE_ROUNDS = 500  # evaluation rounds of sample answers kept (each is a few short strings)


# --- the view of one run ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    prompt: str
    answer: str
    step: int | None
    when: str | None
    #: A GRPO completion's reward (the weighted sum) and each reward function's score; None and ().
    reward: float | None = None
    rewards: tuple[tuple[str, float | None], ...] = ()


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
    tokens_per_s: float | None  # the last logging window's rate (see ``rate`` for the one to show)
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
    best_eval: tuple[float, float] | None = None  # (step, lowest eval loss)
    #: A preference run's (DPO, ORPO) or GRPO run's latest reward figures as the events name them
    #: (``reward_margin``, ``reward_accuracy``, ``eval_reward_margin``; GRPO: ``reward_mean``,
    #: ``reward_std``, ``reward_<function>_mean``/``_std``, ``completion_length``, ``kl``, ``clip_ratio``,
    #: and the ``eval_`` ones); empty for other runs.
    rewards: tuple[tuple[str, float], ...] = ()
    #: A GRPO run's reward (the weighted sum's mean over the completions) by step, train and eval.
    reward_points: tuple[tuple[float, float], ...] = ()
    eval_reward_points: tuple[tuple[float, float], ...] = ()
    #: A running run that is stalled: the time of its last sign of life (tuitune.train.watch.judge_stall).
    stalled_since: float | None = None

    @property
    def average_tokens_per_s(self) -> float | None:
        """The whole run's rate: the tokens trained so far over the training seconds so far (every
        session of the run; the gap while it was stopped does not count). None before any count."""
        if not self.tokens or not self.elapsed or self.elapsed <= 0:
            return None
        return self.tokens / self.elapsed

    @property
    def rate(self) -> tuple[float | None, bool]:
        """(tokens/s to show, whether it is the recent rate): a live run's last logging window, an
        ended run's whole-run average (its last window says little: a slow last save, a sample)."""
        if self.live:
            return self.tokens_per_s, True
        return self.average_tokens_per_s, False

    def reward(self, name: str) -> float | None:
        """The latest ``reward_margin``, ``eval_reward_accuracy``, ``reward_mean``, ``kl``, ... or None."""
        return dict(self.rewards).get(name)

    @property
    def has_reward(self) -> bool:
        """Whether the run logs a reward to chart (a GRPO run)."""
        return bool(self.reward_points or self.eval_reward_points)

    @property
    def live(self) -> bool:
        return self.status in LIVE

    def stalled_for(self, now: float) -> float | None:
        """Seconds since a stalled run's last step; None for a run that is not stalled."""
        if self.status != "running" or self.stalled_since is None:
            return None
        return max(0.0, now - self.stalled_since)

    def shown_status(self, now: float) -> str:
        """The status as the dashboard shows it: ``stalled 12m03s`` for a stalled run (its style is
        RUN_STATUS_STYLE's of the first word)."""
        return stalled_text(self.status, self.stalled_since, now)

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


def stalled_text(status: str, stalled_since: float | None, now: float) -> str:
    """``stalled 12m03s`` (since the last step) for a running run that is stalled; else ``status``."""
    from tuitune.train.formatting import format_duration

    if status != "running" or stalled_since is None:
        return status
    return f"stalled {format_duration(now - stalled_since)}"


class RunView:
    """Everything the dashboard shows about one run, updated by ``feed(events)``."""

    def __init__(self, run_id: str = "", max_points: int = MAX_POINTS):
        self.run_id = run_id
        self.max_points = max_points
        self.reset()

    def reset(self) -> None:
        self.loss = Series(self.max_points)
        self.eval = Series(self.max_points)
        self.reward = Series(self.max_points)       # a GRPO run's reward_mean by step
        self.eval_reward = Series(self.max_points)
        self.status = "unknown"
        self.error: str | None = None
        self.stalled_since: float | None = None
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
        self.rewards: dict[str, float] = {}  # a preference or GRPO run's latest reward figures (Snapshot.rewards)
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
                self._rewards(e, "")
                if step is not None and isinstance(e.get("reward_mean"), (int, float)):
                    self.reward.add(step, e["reward_mean"])
            elif t == "eval":
                if e.get("step") is not None and e.get("eval_loss") is not None:
                    self.eval.add(e["step"], e["eval_loss"])
                    self.last_eval = e["eval_loss"]
                self._rewards(e, "eval_")
                if e.get("step") is not None and isinstance(e.get("eval_reward_mean"), (int, float)):
                    self.eval_reward.add(e["step"], e["eval_reward_mean"])
            elif t == "sample":
                answers = []
                for a in e.get("answers") or ():
                    prompt = str(a.get("prompt", ""))
                    scores = a.get("rewards") if isinstance(a.get("rewards"), dict) else {}
                    s = Sample(prompt, str(a.get("answer", "")), e.get("step"), e.get("when"),
                               a.get("reward"), tuple(scores.items()))
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

    def _rewards(self, e: dict, prefix: str) -> None:
        # What TRL's preference and GRPO trainers log beside the loss (the callback names rewards/margins
        # reward_margin, reward reward_mean, rewards/exact/mean reward_exact_mean, ...): the rewards taken
        # by prefix, so a figure it adds later needs nothing here; GRPO's others by name.
        for key, value in e.items():
            if isinstance(value, (int, float)) and key.startswith(prefix) and (
                    key.startswith(prefix + "reward_") or key[len(prefix):] in _GRPO_OTHERS):
                self.rewards[key] = value

    def feed_bytes(self, data: bytes) -> None:
        """Feed complete JSON lines, as ``feed(parse_lines(data))`` does, only faster.

        Train events are almost every line of a long run, and the dashboard needs only
        (step, loss) from all but the newest. Those pairs are picked out of the chunk by
        one regular-expression scan; every other line, and the newest train line, is
        parsed in full and fed in file order. If the scan does not account for every train
        line (a format it does not know, a null loss), or the lines carry a GRPO run's reward (a series
        of its own; such runs log a step every few seconds, never 100k), the chunk is parsed line by line.
        """
        if _REWARD_MARK in data:
            self.feed(parse_lines(data))
            return
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
        self.stalled_since = state.get("stalled_since")
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
            sample_rounds=tuple(self.rounds), best_eval=self.eval.min, rewards=tuple(self.rewards.items()),
            reward_points=tuple(self.reward.points()), eval_reward_points=tuple(self.eval_reward.points()),
            stalled_since=self.stalled_since)


# --- following events.jsonl -------------------------------------------------------------------------

# A train line as the worker writes it (json.dumps: "time" first, then "type", "step", ...).
_TRAIN_MARK = b'"type": "train"'
_REWARD_MARK = b'"reward_mean": '
#: What a GRPO run logs beside its rewards (callbacks.GRPO_LOGS' names), kept with them.
_GRPO_OTHERS = ("completion_length", "kl", "clip_ratio")
_TRAIN_RE = re.compile(rb'"type": "train", "step": (-?\d+),[^\n]*?"loss": (-?(?:\d[\d.eE+-]*|NaN|Infinity))[,}]')
