"""The evaluation report: ``report.json``, ``answers.jsonl`` and ``report.md`` in one folder.

Written to a temporary folder beside the output and renamed into place, so a report is
whole or absent. Marks a user puts on records (good, bad) are saved into the report's
files (each rewritten atomically) and counted in its summary.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from tuitune.errors import TuituneError
from tuitune.fsutil import atomic_write_json, atomic_write_text

REPORT_JSON, ANSWERS, REPORT_MD = "report.json", "answers.jsonl", "report.md"
MARKS = ("good", "bad")
#: A record counts as better or worse when its ROUGE-L moves by more than this.
SAME_WITHIN = 0.01
SIDES = ("baseline", "target")


def verdict(change: float | None) -> str:
    if change is None:
        return "same"
    return "better" if change > SAME_WITHIN else "worse" if change < -SAME_WITHIN else "same"


def summarize(report: dict, records: list[dict]) -> dict:
    """The counts a report's summary holds: better / worse / same, and the hand marks."""
    s = report["summary"]
    for v in ("better", "worse", "same"):
        s[v] = sum(1 for r in records if r.get("verdict") == v) \
            if report.get("baseline") and (report["generated"] or report.get("pairs")) else None
    for m in MARKS:
        s[f"marked_{m}"] = sum(1 for r in records if r.get("mark") == m)
    return report


def _pct(a: float, b: float) -> str:
    return f"{(b - a) / a * 100:+.0f}%" if a else ""


def summary_line(report: dict) -> str:
    """``held-out loss 2.31 → 1.42 (-39%), ROUGE-L 0.18 → 0.41, better on 61 of 69``."""
    s, parts = report["summary"], []
    t, b = s.get("target") or {}, s.get("baseline") or {}
    if t.get("margin") is not None:
        n = report["records"]
        if b.get("margin") is not None:
            parts.append(f"chosen-over-rejected margin {b['margin']:+.2f} → {t['margin']:+.2f} nats, prefers chosen "
                         f"on {round(b['accuracy'] * n)} → {round(t['accuracy'] * n)} of {n}")
        else:
            parts.append(f"chosen-over-rejected margin {t['margin']:+.2f} nats, prefers chosen on "
                         f"{round(t['accuracy'] * n)} of {n}")
    elif t.get("reward") is not None:
        parts += reward_parts(t, b)
    elif t.get("loss") is not None:
        if b.get("loss") is not None:
            parts.append(f"held-out loss {b['loss']:.2f} → {t['loss']:.2f} ({_pct(b['loss'], t['loss'])})")
        else:
            parts.append(f"held-out loss {t['loss']:.2f}")
    if t.get("rouge_l") is not None:
        parts.append(f"ROUGE-L {b['rouge_l']:.2f} → {t['rouge_l']:.2f}" if b.get("rouge_l") is not None
                     else f"ROUGE-L {t['rouge_l']:.2f}")
    if s.get("better") is not None:
        parts.append(f"better on {s['better']} of {report['records']}")
    marks = [f"{s[f'marked_{m}']} marked {m}" for m in MARKS if s.get(f"marked_{m}")]
    from tuitune.eval.bench import bench_line

    general = bench_line(report.get("bench"))   # --bench: lm-eval's tasks, base → tuned
    return "; ".join(x for x in (", ".join(parts + marks), general) if x) or "nothing measured"


def reward_parts(t: dict, b: dict) -> list[str]:
    """A GRPO report's figures, baseline → target: the weighted reward, exact and format rates, length."""
    parts = []
    for title, key, fmt in (("reward", "reward", "{:.2f}"), ("exact", "exact_rate", "{:.0%}"),
                            ("format", "format_rate", "{:.0%}"), ("answer tokens", "answer_tokens", "{:.1f}")):
        if t.get(key) is not None:
            parts.append(f"{title} " + (f"{fmt.format(b[key])} → " if b.get(key) is not None else "")
                         + fmt.format(t[key]))
    return parts


def reward_rows(report: dict) -> list[tuple[str, str, str]]:
    """The summary table's rows of a GRPO report: (title, summary key, format)."""
    rewards = report.get("rewards") or []
    if not rewards:
        return []
    t = report["summary"].get("target") or {}
    regex = [r["label"] for r in rewards if r["name"] == "regex"]
    return [("reward, weighted sum (mean)", "reward", "{:.3f}"),
            *[(f"reward `{r['label']}` (mean, weight {r['weight']:g})", f"reward_{r['label']}", "{:.3f}")
              for r in rewards],
            (f"exact pass rate ({t.get('with_answer', 0)} with an answer)", "exact_rate", "{:.1%}"),
            (f"format rate ({', '.join(regex)} all matched)", "format_rate", "{:.1%}")]


def data_text(report: dict, code: bool = False, note: bool = True) -> str:
    """``data/split/test.jsonl, 6 of 36 records (the test side of ...)``: the report's held-out file."""
    d = report["summary"].get("data") or {}
    name = d.get("file") or report["data"]
    if name is None:   # --bench alone: general ability, no held-out file
        return "no held-out data"
    kind = "pairs" if report.get("pairs") else "records"
    n, total = report["records"], d.get("records")
    count = f"{n} of {total} {kind}" if total and total != n else f"{n} {kind}"
    return (f"`{name}`" if code else name) + f", {count}" + (f" ({d['note']})" if note and d.get("note") else "")


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", "<br>")


def markdown(report: dict, records: list[dict]) -> str:
    """``report.md``: the settings, the summary table, checkpoints, records by the biggest change."""
    s = report["summary"]
    tgt, base = report["target"], report.get("baseline")
    lines = [f"# Evaluation: {tgt['label']}", "", summary_line(report), "",
             f"- **target**: `{tgt['label']}` ({tgt['base']}{' + ' + tgt['adapter'] if tgt.get('adapter') else ''})"]
    if base:
        lines.append(f"- **baseline**: `{base['label']}` ({base['base']}"
                     f"{' + ' + base['adapter'] if base.get('adapter') else ''})")
    st = report["settings"]
    sampling = ("each pair's answers scored, none generated" if report.get("pairs") else
                f"max_new_tokens {st['max_new_tokens']}, " + ('greedy' if st['temperature'] == 0 else
                                                             f"temperature {st['temperature']}, seed {st['seed']}"))
    lines += [f"- **data**: {data_text(report, code=True)}",
              f"- **settings**: template `{st['template']}`, {sampling}",
              *([f"- **rewards** (the run's): " + ", ".join(f"`{r['line']}`" for r in report["rewards"])]
                if report.get("rewards") else []),
              "", "| metric | " + (" baseline |" if base else "") + " target |",
              "| --- | " + ("--- | " if base else "") + "--- |"]
    rows = [("log-prob margin, chosen − rejected", "margin", "{:+.3f}"), ("prefers chosen", "accuracy", "{:.1%}"),
            ("log-prob of chosen (mean)", "chosen_logp", "{:.2f}"),
            ("log-prob of rejected (mean)", "rejected_logp", "{:.2f}"),
            ("held-out loss" + (" (chosen answers)" if report.get("pairs") else ""), "loss", "{:.4f}"), ("perplexity", "ppl", "{:.2f}"), ("ROUGE-L", "rouge_l", "{:.3f}"),
            ("BLEU-4", "bleu", "{:.1f}"), ("chrF", "chrf", "{:.1f}"), ("exact match", "exact", "{:.1%}"),
            ("answer tokens (mean)", "answer_tokens", "{:.1f}"), ("hit the token limit", "hit_limit", "{:.1%}")]
    rows = reward_rows(report) + rows if report["records"] else []   # none: --bench alone, no held-out table
    if not rows:
        lines[-2:] = []
    for title, key, fmt in rows:
        vals = [(s.get(side) or {}).get(key) for side in (SIDES if base else ("target",))]
        if all(v is None for v in vals):
            continue
        lines.append(f"| {title} | " + " | ".join("" if v is None else fmt.format(v) for v in vals) + " |")
    from tuitune.eval.bench import markdown as bench_markdown

    lines += bench_markdown(report.get("bench"))   # "General ability", beside the held-out results
    if report.get("checkpoints"):
        lines += ["", "## Held-out loss by checkpoint", "", "| step | loss |", "| --- | --- |"]
        best = min(report["checkpoints"], key=lambda c: c["loss"])
        for c in report["checkpoints"]:
            lines.append(f"| {c['step']}{' (best)' if c is best else ''} | {c['loss']:.4f} |")
    if report.get("pairs"):
        lines += ["", "## Pairs, biggest change first", ""]
        for r in sorted(records, key=lambda r: -abs(r.get("change") or 0)):
            head = f"### {r['index'] + 1}. {r.get('verdict', '')}"
            if r.get("change") is not None:
                head += f" (margin {r['change']:+.2f})"
            if r.get("mark"):
                head += f", marked {r['mark']}"
            lines += [head, "", f"**prompt**: {_md_cell(r['prompt'])}", "", f"**chosen**: {_md_cell(r['reference'])}",
                      "", f"**rejected**: {_md_cell(r['rejected'])}", ""]
            for side in SIDES:
                if r.get(side):
                    lines += [f"**{side}** margin: {r[side]['margin']:+.3f}", ""]
    if report.get("generated"):
        lines += ["", "## Records, biggest change first", ""]
        for r in sorted(records, key=lambda r: -abs(r.get("change") or 0)):
            head = f"### {r['index'] + 1}. {r.get('verdict', '')}"
            if r.get("change") is not None:
                head += f" ({'reward' if report.get('rewards') else 'ROUGE-L'} {r['change']:+.2f})"
            if r.get("mark"):
                head += f", marked {r['mark']}"
            lines += [head, "", f"**prompt**: {_md_cell(r['prompt'])}", "", f"**reference**: {_md_cell(r['reference'])}", ""]
            for side in SIDES:
                if r.get(side):
                    lines += [f"**{side}**: {_md_cell(r[side]['answer'])}", ""]
                    if "rewards" in r[side]:
                        lines += [f"*{side} reward {r[side]['reward']:.2f}*: " + reward_cells(r[side]), ""]
    return "\n".join(lines).rstrip() + "\n"


def reward_cells(side: dict) -> str:
    """``exact 1 · regex 0 · length -0.5 · answer right · format kept``: one side's scores of a record."""
    cells = [f"{k} {'none' if v is None else f'{v + 0.0:g}'}" for k, v in side["rewards"].items()]  # -0 reads 0
    if side.get("exact_pass") is not None:
        cells.append("answer right" if side["exact_pass"] else "answer wrong")
    if side.get("format_ok") is not None:
        cells.append("format kept" if side["format_ok"] else "format missed")
    return " · ".join(cells)


def write_report(folder: Path, report: dict, records: list[dict]) -> None:
    """The three files into ``folder`` (a fresh temporary folder, or a report being re-marked)."""
    summarize(report, records)
    atomic_write_text(folder / ANSWERS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_text(folder / REPORT_MD, markdown(report, records))
    atomic_write_json(folder / REPORT_JSON, report)


def read_report(folder: str | Path) -> tuple[dict, list[dict]]:
    folder = Path(folder)
    try:
        report = json.loads((folder / REPORT_JSON).read_text(encoding="utf-8"))
        records = [json.loads(line) for line in (folder / ANSWERS).read_text(encoding="utf-8").splitlines()
                   if line.strip()]
    except FileNotFoundError as exc:
        raise TuituneError(f"{folder}: not an evaluation report (no {Path(exc.filename).name}); give a folder "
                           "`tuitune eval` wrote (see `tuitune eval --list`)") from None
    except (OSError, ValueError) as exc:
        raise TuituneError(f"{folder}: the report is unreadable ({exc}); run the evaluation again") from None
    return report, records


def mark(folder: str | Path, number: int, value: str | None) -> dict:
    """Mark record ``number`` (1-based, as shown) good, bad or nothing; returns the report."""
    if value not in (*MARKS, None):
        raise TuituneError(f"mark {value!r}: use good, bad or clear")
    report, records = read_report(folder)
    if not 1 <= number <= len(records):
        raise TuituneError(f"{folder}: no record {number}; the report has records 1 to {len(records)}")
    records[number - 1]["mark"] = value
    write_report(Path(folder), report, records)
    return report


def list_reports(workspace: str | Path) -> list[tuple[Path, dict]]:
    """The workspace's reports (``evals/*``), newest first."""
    root = Path(workspace) / "evals"
    out = []
    for d in root.iterdir() if root.is_dir() else []:
        try:
            out.append((d, json.loads((d / REPORT_JSON).read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda x: -float(x[1].get("created") or 0))


def side_summary(losses, answers, scores, corpus, max_new_tokens, pairs: list[dict] | None = None) -> dict:
    """One model's row of the summary (``pairs``: the pair scores, with ``losses`` the chosen answers')."""
    from tuitune.eval.loss import mean_loss

    loss = mean_loss(losses) if losses else None
    out = {"loss": loss, "ppl": math.exp(loss) if loss is not None and loss < 50 else None}
    if pairs:
        n = len(pairs)
        out.update(margin=sum(p["margin"] for p in pairs) / n, accuracy=sum(1 for p in pairs if p["margin"] > 0) / n,
                   chosen_logp=sum(p["chosen_logp"] for p in pairs) / n,
                   rejected_logp=sum(p["rejected_logp"] for p in pairs) / n)
    if answers:
        n = len(answers)
        out.update(rouge_l=sum(s["rouge_l"] for s in scores) / n, exact=sum(s["exact"] for s in scores) / n,
                   bleu=corpus["bleu"], chrf=corpus["chrf"], **answer_stats(answers))
    return out


def answer_stats(answers) -> dict:
    """The answers' mean length in tokens and the share that hit the token limit."""
    n = len(answers)
    return {"answer_tokens": sum(a.new_tokens for a in answers) / n if n else None,
            "hit_limit": sum(1 for a in answers if a.finish == "length") / n if n else None}


def now_stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


__all__ = ["REPORT_JSON", "ANSWERS", "REPORT_MD", "MARKS", "verdict", "summary_line", "data_text", "markdown",
           "write_report", "read_report", "mark", "list_reports", "side_summary", "answer_stats", "reward_parts",
           "reward_rows", "reward_cells"]
