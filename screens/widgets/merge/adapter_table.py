"""The table of adapters the Merge step can merge: each run's final adapter and its checkpoints."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from tuitune.render import RUN_STATUS_STYLE


class MergeSources(DataTable):
    """Rows keyed ``<run id>::final`` or ``<run id>::<step>``; ``rows_by_key`` holds the SourceRows."""

    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.rows_by_key: dict = {}
        self.tooltip = ("Adapters you can merge: each run's final adapter, then its checkpoints. "
                        "Arrows pick one; the output folder follows.")

    def fill(self, rows, select: str | None = None) -> None:
        """Show ``rows``; put the cursor on ``select`` (a row key or a run id) if given, else keep it."""
        keep = select or (self.current_key() if self.row_count else None)
        self.clear(columns=True)
        # Explicit widths fitted to the rows: auto widths are measured only later, on idle,
        # so a frame drawn in between would show the columns cut short.
        cols = [("run", "run", [r.run_id for r in rows]), ("adapter", "what", [r.what for r in rows]),
                ("run status", "status", [r.status for r in rows])]
        widths = [max([len(label), *map(len, values)]) for label, _, values in cols]
        # The run id takes what the other columns leave (2 cells of padding each, a scrollbar):
        # a long id wraps onto more lines of its row, never cut.
        room = (self.size.width or self.app.size.width - 20) - sum(widths[1:]) - 2 * len(cols) - 2
        widths[0] = max(len("run"), min(widths[0], room))
        for (label, key, _), width in zip(cols, widths):
            self.add_column(label, key=key, width=width)
        self.rows_by_key = {r.key: r for r in rows}
        for r in rows:
            self.add_row(Text(r.run_id, overflow="fold"), Text(r.what),
                         Text(r.status, style=RUN_STATUS_STYLE.get(r.status, "")), key=r.key, height=None)
        keys = [r.key for r in rows]
        target = keep if keep in keys else next((k for k in keys if keep and k.startswith(f"{keep}::")), None)
        if target:
            self.move_cursor(row=keys.index(target))

    def current_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:
            return None

    def current(self):
        return self.rows_by_key.get(self.current_key())
