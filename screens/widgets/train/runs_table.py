"""The Train step's runs table: the workspace's runs, newest first, with status, step, loss and age."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from tuitune.render import RUN_STATUS_STYLE
from tuitune.train.formatting import format_age, format_loss, format_steps
from tuitune.train.watch import RunRow

# The columns: label, key, narrowest width.
COLUMNS = (("run", "id", 3), ("status", "status", 8), ("step", "step", 7), ("loss", "loss", 6), ("age", "age", 4))


def cells(r: RunRow, now: float) -> tuple[Text, ...]:
    """One run's row: its id (wrapped, never cut), status, steps, last loss and age."""
    shown = r.shown_status(now)  # "stalled 12m03s" for a stalled run
    status = Text(shown, style=RUN_STATUS_STYLE.get(shown.split()[0], ""))
    age = format_age(now - r.created) if r.created else "-"
    return (Text(r.id, overflow="fold"), status, Text(format_steps(r.step, r.total_steps), justify="right"),
            Text(format_loss(r.last_loss), justify="right"), Text(age, justify="right"))


class RunsTable(DataTable):
    """Rows keyed by run id. :meth:`fill` updates the cells in place while the runs and the
    columns' widths stay; otherwise it rebuilds the table, keeping the cursor on a run."""

    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.tooltip = "The workspace's runs, newest first. Arrows pick the run the dashboard shows."
        self._widths: tuple[int, ...] | None = None

    def fill(self, rows: list[RunRow], now: float, keep: str | None = None) -> None:
        """Show ``rows`` (ages counted from ``now``); a rebuild puts the cursor on ``keep``."""
        keys = [r.id for r in rows]
        current = [k.value for k in self.rows]
        values = {r.id: cells(r, now) for r in rows}
        # Columns get explicit widths, fitted to what they hold; when that changes the table
        # is rebuilt (auto widths would be measured only later, on idle, so a frame drawn
        # in between could show the header and the rows at different widths).
        widths = [min(40, max([min_w, *(c[i].cell_len for c in values.values())]))
                  for i, (_, _, min_w) in enumerate(COLUMNS)]
        # The run id gets what the other columns leave (2 cells of padding each, a scrollbar);
        # a longer id wraps onto a second line of its row instead of being cut.
        room = (self.size.width or 80) - sum(widths[1:]) - 2 * len(COLUMNS)
        widths[0] = max(COLUMNS[0][2], min(max(c[0].cell_len for c in values.values()) if values else 0, room))
        widths = tuple(widths)
        if keys == current and widths == self._widths:
            for r in rows:
                for (_, col, _), value in zip(COLUMNS, values[r.id]):
                    self.update_cell(r.id, col, value)
            return
        self.clear(columns=True)
        for (label, key, _), width in zip(COLUMNS, widths):
            self.add_column(label, key=key, width=width)
        self._widths = widths
        for r in rows:
            self.add_row(*values[r.id], key=r.id, height=None)
        if keep in keys:
            self.move_cursor(row=keys.index(keep))
