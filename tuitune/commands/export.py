"""``tuitune export``: a run, adapter or model → one of the export formats (``tuitune.export.FORMATS``)."""

from __future__ import annotations

import json


def register(sub) -> None:
    from tuitune.commands import MODEL_OR_RUN, MODEL_OR_RUN_HELP, FormsHelpFormatter, model_or_run_forms
    from tuitune.export import FORMATS, OUTTYPES
    from tuitune.fsutil import force_help

    p = sub.add_parser(
        "export", help=f"export a run or model ({', '.join(f.label for f in FORMATS.values())})",
        epilog=model_or_run_forms(hub=False),
        formatter_class=FormsHelpFormatter,
        description="Export MODEL_OR_RUN (a run or adapter is merged first, streamed and verified) as --format "
        "says. A GGUF is written by llama.cpp's convert_hf_to_gguf.py and read back and checked: architecture, "
        "tensors, tokenizer and chat template.")
    p.add_argument("source", metavar=MODEL_OR_RUN, help=MODEL_OR_RUN_HELP)
    p.add_argument("--format", choices=list(FORMATS),
                   help="; ".join(f"{f.name}: {f.description}" for f in FORMATS.values()) + " (default: what OUT's "
                   "name says: " + ", ".join(f"{f.suffix} is {f.name}" for f in FORMATS.values() if f.suffix) + ")")
    p.add_argument("--type", dest="outtype", choices=OUTTYPES, default="f16", help="GGUF tensor type (default: f16)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the output (" + "; ".join(
                   f"{f.name}: a {f.kind}" for f in FORMATS.values()) + ")")
    p.add_argument("--name", metavar="NAME", help="the model's name where the format names it, as "
                   "in ollama create NAME (default: OUT's name)")
    p.add_argument("--llama-cpp", metavar="DIR", help="a llama.cpp checkout (default: LLAMA_CPP_DIR, else the "
                   "converter vendored in the llama-cpp-python source package, fetched once)")
    p.add_argument("--check-runtime", action="store_true", help="after the checks, run the GGUF in llama.cpp: "
                   "each prompt rendered with the GGUF's own chat template, the greedy answers compared with "
                   "`tuitune chat MODEL_OR_RUN --temperature 0 --dtype fp32` on 5 prompts (the run's evaluation "
                   "prompts first); needs llama-cpp-python: pip install 'tuitune[runtime]'")
    p.add_argument("--force", action="store_true", help=force_help("OUT"))
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from tuitune.commands import replacing
    from tuitune.export import export, format_for_output

    def log(line):
        if not args.json:
            print(line, file=sys.stderr, flush=True)

    fmt = args.format or format_for_output(args.output).name
    with replacing(args, args.output):
        res = export(args.source, args.output, workspace=args.workspace, fmt=fmt, outtype=args.outtype,
                     force=args.force, llama_cpp=args.llama_cpp, name=args.name,
                     check_runtime=args.check_runtime, log=log)
    if args.json:
        print(json.dumps(res.to_dict(), ensure_ascii=False, indent=2))
        return 0
    what = f"{res.outtype}, {res.architecture}, " if res.gguf else ""
    print(f"wrote {res.gguf or res.out}: {res.bytes / 1e6:.1f} MB, {what}in {res.seconds:.1f} s")
    if res.checks:
        print("checked: " + "; ".join(res.checks))
    if res.runtime:
        print(res.runtime["line"])
        for line in res.runtime["details"]:   # where an answer parts, and the two candidates' logits
            print(f"  {line}")
    print(f"run it: {res.command}")
    return 0
