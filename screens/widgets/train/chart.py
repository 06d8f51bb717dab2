"""The loss chart of the Train step: train and eval loss against the step, drawn with plotext.

One plot object per widget (textual-plotext's ``self.plt``), never plotext's global one.
New data can arrive many times a second while a run streams in; the chart redraws at
most ``MIN_INTERVAL`` apart and always ends on the newest data. ``log_scale`` draws the
loss on a log axis, so a long flat tail still shows its slope. ``set_overlay`` adds a
second run's train loss in another colour; the legend then names both runs.
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
        self._name = ""  # the run's id: the legend names it when another run is overlaid
        self._overlay: tuple[str, Points] | None = None  # (the other run's id, its train loss)
        self.legend: tuple[str, ...] = ()  # the labels of the series last drawn (tests look at it)
        self._last_draw = float("-inf")
        self._pending = None
        self.log_scale = False
        self.draws = 0  # how many times data was drawn (tests look at it)

    def on_mount(self) -> None:
        super().on_mount()
        self._draw()

    def set_data(self, loss: Points, eval_loss: Points = (), title: str = "", name: str = "") -> None:
        """The run's train and eval loss; ``name`` (its id) labels them while another run is overlaid."""
        if (loss, eval_loss, title, name) == (self._loss, self._eval, self._title, self._name):
            return
        self._loss, self._eval, self._title, self._name = loss, eval_loss, title, name
        self._changed()

    def set_overlay(self, name: str | None, loss: Points = ()) -> None:
        """Draw run ``name``'s train loss over this run's (None: no overlay)."""
        overlay = None if name is None else (name, loss)
        if overlay == self._overlay:
            return
        self._overlay = overlay
        self._changed()

    @property
    def overlay(self) -> tuple[str, Points] | None:
        """The overlaid run's (id, train loss) last given, or None."""
        return self._overlay

    def _changed(self) -> None:
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
        values = [y for _, y in (*self._loss, *self._eval, *(self._overlay[1] if self._overlay else ()))]
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
        other = self._overlay
        # Alone, the series are "train" and "eval"; with another run, the legend names both runs.
        series = [(self._loss, (self._name or "this run") if other else "train", "cyan", "braille"),
                  (self._eval, "eval", "orange", "braille" if len(self._eval) > 1 else "dot")]
        if other:
            series.append((other[1], other[0], "magenta", "braille"))
        self.legend = ()
        for points, label, color, marker in series:
            if points:
                xs, ys = zip(*points)
                plt.plot(list(xs), list(ys), label=label, marker=marker, color=color)
                self.legend += (label,)
        if not self.legend:
            plt.title("no loss logged yet")
        self.refresh()
