"""Answers generated together (Chat's compare mode): token by token, in turn, each its own ``generate()``.

Why turns, and not two generations running at the same moment: in one process the
seed lives in torch's global RNG, and two sides that share one base model differ only
by the adapter in use (peft's ``set_adapter`` / ``disable_adapter`` switch it for every
caller of the model), so two ``model.generate()`` calls at once would draw from each
other's random numbers and run with each other's adapter; on a CPU they would also
fight over the same cores for no gain. So each side stays one ordinary
:class:`tuitune.generation.Generation` (the one generation path), and after each new
token (transformers calls its stopping criteria once a token: that is the hook) the
side that holds the model may hand it to the next one: it saves its RNG state, leaves
its adapter, releases ``GENERATE_LOCK`` and waits for its turn; back in turn it takes the
lock, its RNG state and its adapter again. Each side draws exactly the random numbers
it would have drawn alone, so an answer is the one the same seed gives alone, and the
two answers stream together. A side alone (the other finished) hands over to nobody and
pays nothing.

How long a turn lasts: the first is one token (both answers start at once); after
that a side keeps the model for :data:`SLICE_FACTOR` times what a switch costs. Two
models, or two sides on one base with nothing to switch, alternate every token; a
base shared by a run's adapter and the bare base, where a switch walks every LoRA layer
(20-50 ms on SmolLM2-135M's 210 on a CPU), takes turns of a few tokens, so switching
costs at most a fifth of the time. Between two turns the lock is free, so another user of the model in this
process (an evaluation) may run a batch; the state it leaves behind is replaced.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack, nullcontext
from typing import Callable, ContextManager

#: A turn lasts this many times what a switch costs (so switching is at most 1/(1+this) of the time).
SLICE_FACTOR = 4.0


class Turns:
    """Whose turn it is among the sides of one prompt; sides take turns in order.

    Every side either generates (:meth:`wait` ... :meth:`pass_on` ... :meth:`leave`) or
    leaves, so no side waits forever for one that never came (:meth:`leave` is idempotent).
    """

    def __init__(self, sides: int):
        self._cond = threading.Condition()
        self._active = list(range(sides))
        self._current = 0
        self.switch_cost = 0.0   # seconds, a moving average over every side's switches
        self._passed: tuple[float, float] | None = None   # the last hand-over: when, and what leaving cost

    @property
    def slice(self) -> float:
        """How long a side keeps the model before it hands over (at least one token)."""
        return SLICE_FACTOR * self.switch_cost

    def note_switch(self, seconds: float) -> None:
        self.switch_cost = seconds if not self.switch_cost else 0.7 * self.switch_cost + 0.3 * seconds

    def taken(self, enter_cost: float) -> None:
        """A side took the model after a hand-over: a switch costs leaving, the wake-up and entering."""
        with self._cond:
            passed, self._passed = self._passed, None
        if passed is not None:
            at, leave_cost = passed
            self.note_switch(leave_cost + (time.perf_counter() - enter_cost - at) + enter_cost)

    def wait(self, side: int) -> None:
        """Block until it is ``side``'s turn (or ``side`` has left)."""
        with self._cond:
            self._cond.wait_for(lambda: self._current == side or side not in self._active)

    def others(self, side: int) -> bool:
        """Whether another side still takes turns (else handing over is pointless)."""
        with self._cond:
            return any(s != side for s in self._active)

    def pass_on(self, side: int, leave_cost: float = 0.0) -> None:
        """``side`` has had its turn (leaving the model cost ``leave_cost``): the next side goes."""
        with self._cond:
            if side in self._active and self._current == side:
                self._passed = (time.perf_counter(), leave_cost)
                i = self._active.index(side)
                self._current = self._active[(i + 1) % len(self._active)]
                self._cond.notify_all()

    def leave(self, side: int) -> None:
        """``side`` is done (or never started): it takes no more turns."""
        with self._cond:
            if side not in self._active:
                return
            i = self._active.index(side)
            self._active.remove(side)
            if self._current == side and self._active:
                self._current = self._active[i % len(self._active)]
            self._cond.notify_all()


def _rng_state():
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state) -> None:
    import torch

    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


class Hold:
    """One generation's hold on the model: the lock, its adapter (``prepare``), its RNG state.

    Used as a context manager around ``model.generate()`` in the generating thread; with
    ``turns``, :meth:`hand_over` (from the stopping criteria, once a token) lets the other
    sides have their token. ``sampled``: the answer draws random numbers (not greedy), so
    its RNG state goes with it across turns.
    """

    def __init__(self, lock, prepare: Callable[[], ContextManager] | None, turns: Turns | None = None,
                 side: int = 0, sampled: bool = False):
        self.lock, self.prepare, self.turns, self.side, self.sampled = lock, prepare, turns, side, sampled
        self._stack: ExitStack | None = None
        self._held = False
        self._since = 0.0   # when this turn began
        self._turns_had = 0

    def _take(self) -> None:
        if self.turns is not None:
            self.turns.wait(self.side)
        self.lock.acquire()
        self._held = True
        self._since = time.perf_counter()

    def _enter(self) -> None:
        self._stack = ExitStack()
        self._stack.enter_context(self.prepare() if self.prepare else nullcontext())

    def _leave(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> "Hold":
        self._take()
        t0 = time.perf_counter()
        try:
            self._enter()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        if self.turns is not None:
            self.turns.taken(time.perf_counter() - t0)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._leave()
        finally:
            if self._held:
                self._held = False
                self.lock.release()
            if self.turns is not None:
                self.turns.leave(self.side)

    def hand_over(self) -> None:
        """After a token: when this turn has lasted its slice (the first: one token), let the
        other sides have theirs, then carry on where this one was."""
        turns = self.turns
        if turns is None or not turns.others(self.side):
            return
        if self._turns_had and time.perf_counter() - self._since < turns.slice:
            return
        self._turns_had += 1
        t0 = time.perf_counter()
        rng = _rng_state() if self.sampled else None
        self._leave()
        self._held = False
        self.lock.release()
        turns.pass_on(self.side, time.perf_counter() - t0)
        self._take()
        t0 = time.perf_counter()
        if rng is not None:
            _set_rng_state(rng)
        self._enter()
        turns.taken(time.perf_counter() - t0)


def hand_over_criteria(hold: Hold):
    """A stopping criterion that never stops: it hands the model over after each token."""
    import torch
    from transformers import StoppingCriteria

    class _HandOver(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            hold.hand_over()
            return torch.zeros(input_ids.shape[:1], dtype=torch.bool, device=input_ids.device)

    return _HandOver()
