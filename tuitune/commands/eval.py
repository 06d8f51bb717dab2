"""``tuitune eval``: a run (or checkpoint, adapter, model) against its base on held-out data; the reports."""

from __future__ import annotations

import argparse
import json
import sys


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def register(sub) -> None:
    from tuitune.commands import MODEL_OR_RUN, MODEL_OR_RUN_HELP, FormsHelpFormatter, model_or_run_forms
    from tuitune.fsutil import force_help
    from tuitune.generation.settings import add_arguments

    p = sub.add_parser(
        "eval", help="did fine-tuning help? held-out loss and answers, the run against its base",
        epilog=model_or_run_forms(), formatter_class=FormsHelpFormatter,
        description="Evaluate MODEL_OR_RUN (a run: its final adapter; RUN:checkpoint-N; an adapter folder; a model folder) "
        "against a baseline (default: the run's base model) on the same held-out records: loss and perplexity "
        "on the answer tokens, and answers scored against the references (ROUGE-L, BLEU-4, chrF, exact "
        "match); a GRPO run's held-out prompt records are scored by its own rewards (each reward's mean, the "
        "exact pass rate, the format rate, answer length). Writes report.json, answers.jsonl and report.md.")
    p.add_argument("target", nargs="?", metavar=MODEL_OR_RUN, help=MODEL_OR_RUN_HELP)
    p.add_argument("--data", metavar="FILE", help="held-out conversation JSONL, prompt records for a grpo run (default: the run's data.eval, "
                   "else the test side of the split whose train side the run trained on, found through the "
                   "split.json `tuitune data split` writes; else give this)")
    p.add_argument("--against", metavar=MODEL_OR_RUN, help="the baseline: base (default: the base model the run "
                   "or adapter was trained on), or any other MODEL_OR_RUN, e.g. RUN:checkpoint-N")
    p.add_argument("--checkpoints", action="store_true", help="also the held-out loss of every checkpoint of the run")
    p.add_argument("--max-samples", type=_count, metavar="N", help="evaluate the first N records only")
    b = p.add_argument_group("general ability (lm-evaluation-harness, base against tuned)")
    b.add_argument("--bench", metavar="TASKS", help="lm-eval tasks, comma-separated: any task or group name "
                   "(English: mmlu, arc_easy, hellaswag; Chinese: cmmlu, ceval-valid; their data comes from the "
                   "Hugging Face Hub), a local task's YAML file or folder, or common (the 60-question offline set "
                   "in sample_data/bench/); each task's score ± its standard error for the run and its base, and "
                   "worse where the tuned score falls by more than two of the base's standard errors. Without "
                   "a held-out file, only this is measured")
    b.add_argument("--limit", metavar="N", help="questions per task (per subtask of a group), or all (default: "
                   "100: minutes on one GPU)")
    b.add_argument("--shots", type=_count, metavar="K", help="few-shot examples per question (default: each "
                   "task's own, 0 for most)")
    g = p.add_argument_group("generation")
    add_arguments(g, names=("temperature", "max_new_tokens", "seed"),
                  defaults={"temperature": 0.0, "max_new_tokens": 256})
    g.add_argument("--batch-size", type=_positive, default=8, metavar="N", help="prompts answered at once (default: 8)")
    g.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="weights dtype (default: auto)")
    p.add_argument("-o", "--output", metavar="DIR", help="report folder (default: evals/<target>-<time>/)")
    p.add_argument("--force", action="store_true", help=force_help("DIR"))
    p.add_argument("--json", action="store_true", help="print the report's JSON")
    r = p.add_argument_group("reports")
    r.add_argument("--list", action="store_true", help="list the workspace's reports")
    r.add_argument("--show", metavar="DIR", help="print a report's summary")
    r.add_argument("--mark", nargs=3, metavar=("DIR", "N", "good|bad|clear"),
                   help="mark record N of a report good or bad by hand (counted in its summary)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tuitune.errors import TuituneError
    from tuitune.eval import default_output, evaluate, list_reports, mark, plan, read_report, summary_line

    if args.list:
        for folder, rep in list_reports(args.workspace):
            print(f"{folder}  {rep['target']['label']}  {summary_line(rep)}")
        return 0
    if args.show:
        rep, _records = read_report(args.show)
        print(json.dumps(rep, ensure_ascii=False, indent=2) if args.json else summary_line(rep))
        return 0
    if args.mark:
        folder, number, value = args.mark
        if not number.isdigit():
            raise TuituneError(f"--mark {folder} {number}: N is a record number, as report.md shows it")
        rep = mark(folder, int(number), None if value == "clear" else value)
        print(summary_line(rep))
        return 0
    if not args.target:
        raise TuituneError("give MODEL_OR_RUN (a run id, RUN:checkpoint-N, an adapter or a model folder), or --list")
    from tuitune.generation.settings import from_arguments

    settings = from_arguments(args)
    if args.bench is None and (args.limit is not None or args.shots is not None):
        raise TuituneError(f"{'--limit' if args.limit is not None else '--shots'} goes with --bench TASKS")
    p = plan(args.target, args.workspace, data=args.data, against=args.against, checkpoints=args.checkpoints,
             max_samples=args.max_samples, need_data=args.bench is None)
    if args.bench is not None:   # each task's data loaded here, before the model
        from tuitune.eval import bench

        if not args.json:
            print(f"general ability: loading {args.bench}", file=sys.stderr, flush=True)
        p.bench = bench.plan(args.bench, args.workspace, limit=args.limit, shots=args.shots)
    out = args.output or default_output(args.workspace, p.target.label)
    if not args.json:  # before anything loads: which file, how many records, and why that one
        print(f"data: {p.held.line(evaluated=len(p.records))}" if p.held is not None else
              f"data: none, general ability only ({p.no_data})", file=sys.stderr, flush=True)
    quiet = args.json or not sys.stderr.isatty()
    last = [""]

    def progress(what, done, total):
        if quiet:
            return
        line = f"\r  {what}: {done}/{total}"
        if line != last[0]:
            last[0] = line
            print(line + " " * 8, end="", file=sys.stderr, flush=True)

    def log(line):
        if not args.json:
            if last[0]:
                print(file=sys.stderr)
                last[0] = ""
            print(line, file=sys.stderr, flush=True)

    from tuitune.commands import replacing

    with replacing(args, out):
        folder, rep = evaluate(p, out, settings=settings, dtype=args.dtype, batch_size=args.batch_size,
                               force=args.force, progress=progress, log=log)
    if last[0]:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps({**rep, "folder": str(folder)}, ensure_ascii=False, indent=2))
    else:
        print(summary_line(rep))
        print(f"report: {folder / 'report.md'}")
    return 0
