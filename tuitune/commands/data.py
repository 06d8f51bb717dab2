"""``tuitune data convert|split|self-cognition|inspect``: the Data step, headless.

Layer twin: ``screens/data.py`` is the same step's screen (one name, two layers).

Light at import: only argparse here; the work happens in ``tuitune.data`` (imported in
each handler), which loads openpyxl or transformers only when a command needs them.
"""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    from tuitune.data.formats import FORMAT_NAMES, TARGETS
    from tuitune.data.records import TASKS
    from tuitune.fsutil import force_help

    p = sub.add_parser("data", help="convert, split, generate and inspect training data",
                       description="Turn a spreadsheet or JSON file into conversation records, split them "
                       "into train and test, generate self-cognition data, and inspect the tokens.")
    dsub = p.add_subparsers(dest="data_verb", metavar="ACTION", parser_class=type(p))
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])

    c = dsub.add_parser("convert", help="convert xlsx/csv/alpaca/ShareGPT/OpenAI/oasst1/text to conversations",
                        description="Convert IN to XTuner conversation records (JSONL, or a JSON array if OUT "
                        "ends in .json). The format is detected unless --format forces one.")
    c.add_argument("input", metavar="IN", help="the file to convert: a spreadsheet (.xlsx, .csv), JSON or JSONL "
                   "records, or plain text")
    c.add_argument("-o", "--output", metavar="OUT", required=True, help="output file (.jsonl or .json)")
    c.add_argument("--format", metavar="FORMAT", help=f"read IN as this format instead of the one detected: "
                   f"{', '.join(FORMAT_NAMES)}")
    c.add_argument("--preset", metavar="NAME", help="a known mapping: medqa (sheet DrugQA, Question → input, Answer → output, "
                   "the tutorial's system prompt)")
    c.add_argument("--sheet", metavar="NAME", help="xlsx sheet (default: the first one with rows)")
    c.add_argument("--input-col", metavar="COL", help="column (or JSON field) holding the question")
    c.add_argument("--output-col", metavar="COL", help="column (or JSON field) holding the answer")
    c.add_argument("--system-col", metavar="COL", help="column holding a per-row system prompt")
    c.add_argument("--system", metavar="TEXT", help="one system prompt for every record")
    c.add_argument("--to", choices=TARGETS, help="what to write: conversations (for sft; the default, preference "
                   "pairs stay pairs) or prompts: prompt records {prompt, answer} for grpo, the last user turn the "
                   "prompt and its reply (GSM8K: the number after ####) the reference answer")
    c.add_argument("--drop-placeholders", action="store_true", help="drop records whose answer is n/a, "
                   "No answers, ... (they are reported either way)")
    c.add_argument("--dedupe", action="store_true", help="drop exact duplicate records (reported either way)")
    c.add_argument("--skip-bad-lines", action="store_true", help="JSONL: skip lines that are not valid JSON "
                   "and report them")
    c.add_argument("--output-format", choices=["jsonl", "json"], help="default: from OUT's extension")
    c.add_argument("--force", action="store_true", help=force_help("OUT"))
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.set_defaults(func=run_convert)

    s = dsub.add_parser("split", help="seeded train/test split, optionally keeping each question on one side",
                        description="Write DIR/train.jsonl and DIR/test.jsonl from a conversation file, and "
                        "DIR/split.json, their manifest (source file and sha256, seed, ratio, grouping, each side's "
                        "file, records and sha256): `tuitune eval` finds a run's held-out file through it.")
    s.add_argument("input", metavar="IN", help="a file of conversations, preference pairs or prompt records (JSONL "
                   "or a JSON array), e.g. from data convert")
    s.add_argument("-o", "--output", metavar="DIR", help="output folder (default: IN's folder)")
    s.add_argument("--test-ratio", type=float, default=0.3, metavar="RATIO", help="share of records for test (default 0.3)")
    s.add_argument("--seed", type=int, default=42, metavar="N", help="shuffle seed (default 42); same seed, same files")
    s.add_argument("--group-by", choices=["none", "input"], default="none",
                   help="input: every record with the same question (a prompt record's prompt) goes to the same side")
    s.add_argument("--force", action="store_true", help=force_help("DIR/train.jsonl, test.jsonl or split.json"))
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(func=run_split)

    g = dsub.add_parser("self-cognition", help="generate who-are-you data carrying a name",
                        description="Questions like 请介绍一下你自己 / Who are you? answered with NAME's "
                        "assistant, in Chinese and English, seeded.")
    g.add_argument("--name", required=True, metavar="NAME", help="the assistant's name the answers carry")
    g.add_argument("--count", type=int, default=150, metavar="N", help="records to write (default 150)")
    g.add_argument("--seed", type=int, default=0, metavar="N", help="which questions and answers are drawn "
                   "(default 0); same seed, same file")
    g.add_argument("-o", "--output", metavar="OUT", required=True, help="output file (.jsonl or .json)")
    g.add_argument("--force", action="store_true", help=force_help("OUT"))
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    g.set_defaults(func=run_selfcog)

    i = dsub.add_parser("inspect", help="validate a record file and show its tokens",
                        description="Validate FILE, print token-length statistics and show which tokens of "
                        "a record are trained (between ⟦ ⟧) and which are masked; for prompt records (grpo), "
                        "the prompt as the model sees it and the reference answer.")
    i.add_argument("file", metavar="FILE", help="a file of conversations, preference pairs or prompt records (JSONL "
                   "or a JSON array)")
    i.add_argument("--model", required=True, metavar="DIR", help="model folder with the tokenizer")
    i.add_argument("--template", metavar="NAME", help="template name, or auto (default: auto if the tokenizer has a chat "
                   "template, else default)")
    i.add_argument("--max-length", type=int, default=2048, metavar="N",
                   help="tokens per sample; longer ones are cut, as training cuts them (default 2048)")
    i.add_argument("--record", type=int, default=1, metavar="N", help="which record to render (1-based, default 1)")
    i.add_argument("--task", choices=TASKS, help="default: dpo for preference pairs, grpo for prompt records, "
                   "pretrain if every record is bare text, else sft")
    i.add_argument("--json", action="store_true", help="print the statistics and the record's tokens as JSON")
    i.set_defaults(func=run_inspect)


def run_convert(args) -> int:
    from tuitune.commands import replacing
    from tuitune.data.convert import convert

    progress = None
    if sys.stderr.isatty():
        def progress(done: int, total: int | None) -> None:
            of = f" of ~{total}" if total else ""
            print(f"\rconverting: {done}{of} rows", end="" if done != total else "\n", file=sys.stderr, flush=True)
    with replacing(args, args.output):
        rep = convert(args.input, args.output, format=args.format, preset=args.preset, sheet=args.sheet,
                      input_col=args.input_col, output_col=args.output_col, system_col=args.system_col,
                      system=args.system, drop_placeholders=args.drop_placeholders, dedupe=args.dedupe,
                      skip_bad_lines=args.skip_bad_lines, output_format=args.output_format, force=args.force,
                      to=args.to, progress=progress)
    if args.json:
        print(json.dumps(rep.to_dict(), ensure_ascii=False, indent=2))
    else:
        print("\n".join(rep.lines()))
    return 0


def run_split(args) -> int:
    from pathlib import Path

    from tuitune.commands import replacing
    from tuitune.data.split import MANIFEST, TEST, TRAIN, split_file
    from tuitune.fsutil import refuse_existing

    out = Path(args.output) if args.output else Path(args.input).parent
    for name in (TRAIN, TEST):  # split_file's outputs (it replaces its own manifest, never another file)
        refuse_existing(out / name, args.force)
    with replacing(args, *(out / name for name in (TRAIN, TEST, MANIFEST))):
        res = split_file(args.input, args.output, args.test_ratio, args.seed, args.group_by)
    if args.json:
        from dataclasses import asdict

        print(json.dumps(asdict(res), ensure_ascii=False, indent=2))
    else:
        print("\n".join(res.lines()))
    return 0


def run_selfcog(args) -> int:
    from tuitune.data.selfcog import write_self_cognition
    from tuitune.fsutil import refuse_existing

    from tuitune.commands import replacing

    refuse_existing(args.output, args.force)
    with replacing(args, args.output):
        n = write_self_cognition(args.output, args.name, args.count, args.seed)
    if args.json:
        print(json.dumps({"output": args.output, "records": n, "name": args.name, "seed": args.seed},
                         ensure_ascii=False))
        return 0
    print(f"wrote {n} self-cognition records for {args.name!r} → {args.output}")
    return 0


def run_inspect(args) -> int:
    from tuitune.data.inspect import inspect_file, render_spans_plain

    res = inspect_file(args.file, args.model, args.template, args.max_length, args.record, args.task)
    if args.json:
        print(json.dumps(res.to_dict(), ensure_ascii=False, indent=2))
        return 0
    print("\n".join(res.lines()))
    if res.answer is not None or res.task == "grpo":
        print(f"\nrecord {res.record} ({res.record_where}): {res.record_tokens} tokens, the prompt as the model sees "
              "it (↵ is a newline):\n")
        print(render_spans_plain(res.spans))
        print(f"reference answer: {res.answer}" if res.answer else
              "no reference answer (the rewards exact and contains need one)")
        return 0
    print(f"\nrecord {res.record} ({res.record_where}): {res.record_tokens} tokens, {res.record_trained} trained")
    print("trained text is between ⟦ and ⟧ (labels = ids); the rest is masked (-100); ↵ is a newline\n")
    sides = [("chosen", res.spans), ("rejected", res.rejected_spans)] if res.rejected_spans is not None \
        else [(None, res.spans)]
    for title, spans in sides:
        if title:
            print(f"--- {title} ---")
        if sys.stdout.isatty():
            from rich.console import Console
            from rich.text import Text

            t = Text()
            for text, trained in spans:
                t.append(text.replace("\n", "↵\n"), style="bold green" if trained else "dim")
            Console(highlight=False).print(t)
        else:
            print(render_spans_plain(spans))
    return 0
