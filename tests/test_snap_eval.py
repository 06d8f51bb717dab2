"""Snapshots of the Evaluate step: a report's summary with its records table, and a record's detail.

The report is written by hand (no model is loaded), so every figure is the same each run.
"""

from __future__ import annotations

from pathlib import Path

from screens.app import TuituneApp
from tuitune.doctor import Report

RECORDS = [
    ("Who are you?", "I am Alice's assistant.", "I am a language model.", "I am Alice's assistant.", 2.9, 0.8),
    ("请介绍一下你自己", "我是Alice的小助手，很高兴为你服务。", "我是一个人工智能。", "我是Alice的小助手。", 3.4, 1.1),
    ("What can you do?", "I answer questions about your data.", "I can do many things.",
     "I answer questions about data.", 3.1, 1.4),
    ("Who trained you?", "Alice trained me.", "OpenAI.", "I was made by a lab.", 2.2, 2.4),
]


def fixed_report(ws: Path) -> Path:
    from tuitune.eval.metrics import sentence_scores
    from tuitune.eval.report import verdict, write_report

    records = []
    for i, (prompt, ref, base, tuned, bl, tl) in enumerate(RECORDS):
        rec = {"index": i, "prompt": prompt, "reference": ref, "mark": None}
        for side, answer, loss in (("baseline", base, bl), ("target", tuned, tl)):
            rec[side] = {"loss": loss, "tokens": 10, "answer": answer, "new_tokens": 8, "finish": "eos",
                         **sentence_scores(answer, ref)}
        rec["change"] = rec["target"]["rouge_l"] - rec["baseline"]["rouge_l"]
        rec["verdict"] = verdict(rec["change"])
        records.append(rec)
    ident = {"label": "quick", "spec": "quick", "base": str(ws / "models" / "tiny-chat"),
             "adapter": str(ws / "runs" / "quick" / "adapter"), "run": "quick", "checkpoint": None}
    base = {**ident, "label": "quick:base", "spec": "quick:base", "adapter": None}
    report = {"version": 1, "created": 1_764_600_000.0, "target": ident, "baseline": base,
              "data": "data/split/test.jsonl", "records": len(records), "generated": True,
              "task": "sft", "settings": {"temperature": 0.0, "seed": 0, "max_new_tokens": 128, "template": "auto"},
              "summary": {"data": {"file": "data/split/test.jsonl", "records": 30, "evaluated": len(records),
                                   "origin": "split", "note": "test side of the split of data/self_cognition.jsonl "
                                   "in data/split/split.json; the run trained on its train side"},
                          "baseline": {"loss": 2.9, "ppl": 18.2, "rouge_l": 0.21, "bleu": 4.2, "chrf": 18.0,
                                       "exact": 0.0},
                          "target": {"loss": 1.42, "ppl": 4.14, "rouge_l": 0.61, "bleu": 38.5, "chrf": 55.1,
                                     "exact": 0.0}},
              "checkpoints": [], "seconds": 12.0}
    folder = ws / "evals" / "quick-20261201-120000"
    folder.mkdir(parents=True)
    write_report(folder, report, records)
    return folder


def make_app(ws: Path) -> TuituneApp:
    return TuituneApp(ws, start="eval", doctor=lambda w: Report())


async def _settled(pilot):
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


def _opened(folder: Path, detail_of: int | None = None):
    async def run_before(pilot):
        await _settled(pilot)
        pilot.app.screen.query_one("#eval-reports").value = str(folder)
        await _settled(pilot)
        if detail_of is not None:
            for _ in range(detail_of):
                await pilot.press("down")
            await pilot.press("b")
            await _settled(pilot)
    return run_before


def test_a_report_80x24(snap_compare, fixed_workspace):
    folder = fixed_report(fixed_workspace)
    assert snap_compare(make_app(fixed_workspace), terminal_size=(80, 24), run_before=_opened(folder))


def test_a_report_120x36(snap_compare, fixed_workspace):
    folder = fixed_report(fixed_workspace)
    assert snap_compare(make_app(fixed_workspace), terminal_size=(120, 36), run_before=_opened(folder))


def test_a_marked_record_in_the_detail_pane_80x24(snap_compare, fixed_workspace):
    folder = fixed_report(fixed_workspace)
    assert snap_compare(make_app(fixed_workspace), terminal_size=(80, 24), run_before=_opened(folder, 2))


def test_a_marked_record_in_the_detail_pane_120x36(snap_compare, fixed_workspace):
    folder = fixed_report(fixed_workspace)
    assert snap_compare(make_app(fixed_workspace), terminal_size=(120, 36), run_before=_opened(folder, 2))


async def test_at_80x24_the_prompt_column_is_on_screen(fixed_workspace):
    """#20 item 14: at 80x24 the table ran past its right edge and its prompt column was never seen; the
    prompt takes what the other columns leave, and the table needs no sideways scrolling."""
    from textual.widgets import DataTable

    folder = fixed_report(fixed_workspace)
    app = make_app(fixed_workspace)
    for size in ((80, 24), (120, 36), (100, 30)):
        async with app.run_test(size=size) as pilot:
            await _opened(folder)(pilot)
            table = app.screen.query_one("#eval-records", DataTable)
            widths = [c.get_render_width(table) for c in table.ordered_columns]
            start = sum(widths[:-1])
            assert str(table.ordered_columns[-1].label) == "prompt"
            assert sum(widths) <= table.scrollable_content_region.width, (size, widths)
            assert widths[-1] - 2 * table.cell_padding >= 10, (size, widths)  # "What can yo…" at least
            assert start + len("prompt") < table.scrollable_content_region.width
        app = make_app(fixed_workspace)
