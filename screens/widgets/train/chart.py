"""The loss chart of the Train step: train and eval loss against the step, drawn with plotext.

One plot object per widget (textual-plotext's ``self.plt``), never plotext's global one.
New data can arrive many times a second while a run streams in; the chart redraws at
most ``MIN_INTERVAL`` apart and always ends on the newest data. ``log_scale`` draws the
loss on a log axis, so a long flat tail still shows its slope.
"""

from __future__ import annotations

import time
from typing import Sequence

from textual_plotext import PlotextPlot

Points = Sequence[tuple[float, float]]


class LossChart(PlotextPlot):
    """Loss (and eval loss) by step. Call ``set_data``; the redraw is throttled."""

    MIN_INTERVAL = 0.5  # seconds between redraws: at most 2 a second

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._loss: Points = ()
        self._eval: Points = ()
        self._title = ""
        self._last_draw = float("-inf")
        self._pending = None
        self.log_scale = False
        self.draws = 0  # how many times data was drawn (tests look at it)

    def on_mount(self) -> None:
        super().on_mount()
        self._draw()

    def set_data(self, loss: Points, eval_loss: Points = (), title: str = "") -> None:
        if (loss, eval_loss, title) == (self._loss, self._eval, self._title):
            return
        self._loss, self._eval, self._title = loss, eval_loss, title
        wait = self._last_draw + self.MIN_INTERVAL - time.monotonic()
        if wait <= 0:
            self._draw()
        elif self._pending is None:
            self._pending = self.set_timer(wait, self._draw_pending)

    def set_log_scale(self, on: bool) -> None:
        """Log (True) or linear (False) loss axis; redraws at once."""
        if on == self.log_scale:
            return
        self.log_scale = on
        if self._pending is not None:
            self._pending.stop()
            self._pending = None
        self._draw()

    @property
    def scale_shown(self) -> str:
        """``log`` or ``linear``: what the axis is drawn with (log needs every loss above zero)."""
        values = [y for _, y in (*self._loss, *self._eval)]
        return "log" if self.log_scale and all(y > 0 for y in values) else "linear"

    def _draw_pending(self) -> None:
        self._pending = None
        self._draw()

    @property
    def points(self) -> tuple[Points, Points]:
        """The data last given (drawn now, or at the next redraw)."""
        return self._loss, self._eval

    @property
    def up_to_date(self) -> bool:
        """True when what is drawn is the data last given (no redraw is waiting)."""
        return self._pending is None

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        if self._loss or self._eval:
            self.draws += 1  # the empty chart drawn at mount is not counted
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        scale = self.scale_shown
        note = "" if scale == "linear" or not self.log_scale else "  (log scale)"
        if self.log_scale and scale == "linear":
            note = "  (log scale needs losses above 0: linear)"
        plt.title((self._title or "loss") + note)
        plt.xlabel("step")
        plt.yscale(scale)
        if self._loss:
            xs, ys = zip(*self._loss)
            plt.plot(list(xs), list(ys), label="train", marker="braille", color="cyan")
        if self._eval:
            xs, ys = zip(*self._eval)
            plt.plot(list(xs), list(ys), label="eval", marker="braille" if len(xs) > 1 else "dot",
                     color="orange")
        if not self._loss and not self._eval:
            plt.title("no loss logged yet")
        self.refresh()
