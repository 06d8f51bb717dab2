"""``tuitune model import FILE.gguf -o DIR``: a GGUF file → a Hugging Face model folder."""

from __future__ import annotations

import json


def register(sub) -> None:
    from tuitune.fsutil import force_help

    p = sub.add_parser("model", help="bring a model into the workspace (import a GGUF file)",
                       description="Model folders for tuitune to train, chat with and merge.")
    verbs = p.add_subparsers(dest="model_verb", metavar="ACTION", required=True)
    imp = verbs.add_parser(
        "import", help="turn a GGUF file into a Hugging Face model folder",
        description="Read a GGUF file with transformers' GGUF loader (dequantizing its weights), write a "
        "Hugging Face model folder (safetensors, config, generation config, tokenizer with its chat "
        "template) and check the folder's logits against the GGUF-loaded model before it appears.")
    imp.add_argument("file", metavar="FILE.gguf", help="the GGUF file")
    imp.add_argument("-o", "--output", required=True, metavar="DIR", help="model folder to write (e.g. models/NAME)")
    imp.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"),
                     help="dtype of the saved weights (default: bf16)")
    imp.add_argument("--force", action="store_true", help=force_help("DIR"))
    imp.add_argument("--no-verify", dest="verify", action="store_false",
                     help="skip comparing the folder's logits with the GGUF-loaded model")
    imp.add_argument("--json", action="store_true", help="print the result as JSON")
    imp.set_defaults(func=run_import)


def run_import(args) -> int:
    import sys

    from tuitune.merge import human_size
    from tuitune.modelimport import import_gguf

    def log(line: str) -> None:
        if not args.json:
            print(line, file=sys.stderr, flush=True)

    from tuitune.commands import replacing

    with replacing(args, args.output):
        res = import_gguf(args.file, args.output, dtype=args.dtype, force=args.force, verify=args.verify, log=log)
    if args.json:
        print(json.dumps(res.to_dict()))
        return 0
    print(f"model folder {res.out}: {res.model_type}, {res.parameters:,} parameters, {res.dtype}, "
          f"{human_size(res.bytes)}, in {res.seconds:.1f} s")
    if args.verify:
        print(f"  {res.line()}")
    return 0
