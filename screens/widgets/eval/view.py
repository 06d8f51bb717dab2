"""An evaluation report on screen: the summary card, the records by change, the record under the cursor."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Static

from tuitune.eval.report import data_text, reward_cells, summary_line

#: General ability's verdicts (tuitune eval --bench): the tuned model kept what it knew, or lost it.
BENCH_STYLE = {"kept": "green", "worse": "bold red"}

VERDICT_STYLE = {"better": "green", "worse": "red", "same": "dim"}
#: The verdict in one cell beside the change (the detail pane spells it out).
VERDICT_MARK = {"better": "▲", "worse": "▼", "same": "="}
MARK_TEXT = {"good": "✓ good", "bad": "✗ bad", None: ""}
MARK_CELL = {"good": "✓", "bad": "✗", None: ""}


def summary_card(report: dict) -> Text:
    """Loss base → tuned, the metrics, better/worse/same and the marks."""
    s = report["summary"]
    t, b = s.get("target") or {}, s.get("baseline") or {}
    base_label = report["baseline"]["label"] if report.get("baseline") else None
    text = Text()
    text.append(f"{report['target']['label']}", style="bold")
    if base_label:
        text.append(f" vs {base_label}", style="bold dim")
    text.append(f" · {data_text(report, note=False)}\n", style="dim")
    text.append(summary_line(report) + "\n", style="bold")
    cells = []
    for title, key, fmt in (("margin", "margin", "{:+.2f}"), ("prefers chosen", "accuracy", "{:.0%}"),
                            ("loss", "loss", "{:.3f}"), ("ROUGE-L", "rouge_l", "{:.2f}"), ("BLEU", "bleu", "{:.1f}"),
                            ("chrF", "chrf", "{:.1f}"), ("exact", "exact", "{:.0%}")):
        if t.get(key) is None:
            continue
        cells.append(f"{title} {fmt.format(b[key]) + ' → ' if b.get(key) is not None else ''}{fmt.format(t[key])}")
    text.append("  ·  ".join(cells), style="")
    if report.get("rewards"):   # a GRPO run: each of its rewards, baseline → target
        text.append(("\n" if cells else "") + "rewards  ", style="bold dim")
        text.append("  ·  ".join(f"{r['label']} " + (f"{b[k]:.2f} → " if b.get(k) is not None else "")
                                 + ("none" if t.get(k) is None else f"{t[k]:.2f}")
                                 for r in report["rewards"] for k in [f"reward_{r['label']}"]))
    if s.get("better") is not None:
        text.append(f"\nbetter {s['better']} · worse {s['worse']} · same {s['same']}", style="")
        text.append(f" · marked good {s['marked_good']}, bad {s['marked_bad']}", style="dim")
    general = bench_text(report.get("bench"))
    if text.plain.endswith("\n"):   # no held-out figures above it: no blank line
        general = general[1:]
    return text.append_text(general)


def bench_text(bench: dict | None) -> Text:
    """General ability (``--bench``): each task's score ± standard error, base → tuned, and its verdict."""
    text = Text()
    for r in (bench or {}).get("tasks") or []:
        b, t = r.get("baseline"), r["target"]
        text.append("\ngeneral ability  " if not text else "\n                 ", style="bold dim")
        text.append(f"{r['task']} {r['metric']} ")
        if b:
            text.append(f"{b['score']:.2f} ± {b['stderr']:.2f} → ")
        text.append(f"{t['score']:.2f} ± {t['stderr']:.2f}")
        if r.get("verdict"):
            text.append(f"  {r['verdict']}", style=BENCH_STYLE.get(r["verdict"], ""))
    return text


def detail_text(record: dict | None) -> Text:
    if record is None:
        return Text("No record selected.", style="dim")
    text = Text()
    text.append(f"{record['index'] + 1}. ", style="bold")
    if record.get("verdict"):
        text.append(record["verdict"], style=VERDICT_STYLE.get(record["verdict"], ""))
    if record.get("mark"):
        text.append(f"  {MARK_TEXT[record['mark']]}", style="bold")
    text.append("\nprompt\n", style="bold dim").append(record["prompt"] + "\n")
    if "rejected" in record:   # a preference pair: both answers, and each side's log-prob margin
        text.append("chosen\n", style="bold dim").append(record["reference"] + "\n")
        text.append("rejected\n", style="bold dim").append(record["rejected"] + "\n")
        for side in ("baseline", "target"):
            r = record.get(side)
            if r:
                text.append(f"{side}", style="bold dim")
                text.append(f"  log p(chosen) {r['chosen_logp']:.2f} · log p(rejected) {r['rejected_logp']:.2f} · "
                            f"margin {r['margin']:+.2f}\n")
        return text
    text.append("reference\n", style="bold dim").append((record["reference"] or "(none)") + "\n")
    for side in ("baseline", "target"):
        r = record.get(side)
        if not r or "answer" not in r:
            continue
        text.append(f"{side}", style="bold dim")
        if "rewards" in r:   # a GRPO run's answer: its reward and each reward's score
            text.append(f"  reward {r['reward']:.2f} · {reward_cells(r)}"
                        f"{' · hit max tokens' if r.get('finish') == 'length' else ''}\n", style="dim")
            text.append((r["answer"] or "(empty)") + "\n")
            continue
        text.append(f"  ROUGE-L {r['rouge_l']:.2f} · loss {r['loss']:.2f}"
                    f"{' · hit max tokens' if r.get('finish') == 'length' else ''}\n", style="dim")
        text.append((r["answer"] or "(empty)") + "\n")
    return text


class ReportView(Vertical):
    """Summary above; below it the records table (biggest change first) beside the detail pane."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.report: dict | None = None
        self.records: list[dict] = []
        self.order: list[int] = []
        self._width = 0

    def compose(self) -> ComposeResult:
        yield Static("", id="eval-summary")
        with Horizontal(id="eval-lower"):
            yield DataTable(id="eval-records", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="eval-detail-box"):
                yield Static(detail_text(None), id="eval-detail")

    def show(self, report: dict, records: list[dict], keep: int | None = None) -> None:
        self.report, self.records = report, records
        self.query_one("#eval-summary", Static).update(summary_card(report))
        self.order = sorted(range(len(records)), key=lambda i: -abs(records[i].get("change") or 0))
        self._fill(keep)
        self.call_after_refresh(self._fit)  # the table's width is known once it is laid out

    def _fixed_columns(self) -> list[tuple[str, str, int]]:
        """(label, key, width) of the columns before the prompt: # (with the mark) and the change."""
        digits = len(str(len(self.records)))
        report = self.report or {}
        change = "Δmargin" if report.get("pairs") else "Δreward" if report.get("rewards") else "ΔROUGE"
        return [("#", "n", digits + 1), (change, "change", 7)]

    def _prompt_width(self) -> int:
        """What the table leaves for the prompt, so it is never pushed past the right edge (80x24)."""
        table = self.query_one("#eval-records", DataTable)
        pad = 2 * table.cell_padding
        used = sum(w + pad for _l, _k, w in self._fixed_columns()) + pad
        return max(6, table.scrollable_content_region.width - used)

    def _fill(self, keep: int | None = None) -> None:
        table = self.query_one("#eval-records", DataTable)
        width = self._prompt_width()
        self._width = width
        table.clear(columns=True)
        for label, key, w in self._fixed_columns():
            table.add_column(label, key=key, width=w)
        table.add_column("prompt", key="prompt", width=width)
        for i in self.order:
            r = self.records[i]
            change, verdict = r.get("change"), r.get("verdict")
            cell = Text("" if change is None else f"{VERDICT_MARK.get(verdict, ' ')}{change:+.2f}",
                        style=VERDICT_STYLE.get(verdict, ""))
            table.add_row(Text(f"{i + 1}{MARK_CELL[r.get('mark')]}"), cell,
                          Text(" ".join(r["prompt"].split())[:400], overflow="ellipsis", no_wrap=True), key=str(i))
        if keep is not None and keep in self.order:
            table.move_cursor(row=self.order.index(keep))
        self.show_detail()

    def _fit(self) -> None:
        """Fill again when the table's width changed what the prompt column can have."""
        if self.report is not None and self._prompt_width() != self._width:
            self._fill(self.current())

    def on_resize(self) -> None:
        self.call_after_refresh(self._fit)

    def current(self) -> int | None:
        """The index (0-based, in the report) of the record under the cursor."""
        table = self.query_one("#eval-records", DataTable)
        if not table.row_count:
            return None
        return self.order[table.cursor_row] if table.cursor_row < len(self.order) else None

    def show_detail(self) -> None:
        i = self.current()
        self.query_one("#eval-detail", Static).update(detail_text(self.records[i] if i is not None else None))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.show_detail()
