"""``tuitune merge``: a run's adapter (or any adapter folder) + its base → a standalone model.

Layer twin: ``screens/merge.py`` is the same step's screen (one name, two layers).
"""

from __future__ import annotations

import json
import sys

DTYPES = ("fp16", "bf16", "fp32")


def register(sub) -> None:
    from tuitune.fsutil import force_help

    p = sub.add_parser(
        "merge", help="merge an adapter into its base as a standalone model (streamed shard by shard)",
        description="Merge a LoRA/QLoRA adapter into its base model, one safetensors shard at a time, and "
        "check that the merged model's logits match base + adapter. The output folder appears only "
        "when complete. With --export-adapter, write a clean adapter folder instead.")
    p.add_argument("source", metavar="RUN_OR_ADAPTER", help="a run id (its final adapter), RUN:checkpoint-N or an "
                   "adapter folder: what has an adapter to merge (a model folder has none)")
    p.add_argument("--base", metavar="DIR", help="base model folder (default: the run's model, or "
                   "base_model_name_or_path in adapter_config.json)")
    p.add_argument("--checkpoint", type=int, metavar="N", help="merge the run's checkpoint-N instead of its final adapter")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("-o", "--output", metavar="OUT", help="folder to write the merged model to (must not exist "
                     "or be empty)")
    out.add_argument("--export-adapter", metavar="OUT", help="write a clean adapter folder (config, weights, "
                     "tokenizer) instead of merging")
    p.add_argument("--max-shard-size", default="2GB", metavar="SIZE", help="largest output shard (default: 2GB)")
    p.add_argument("--dtype", choices=DTYPES, help="dtype of the merged weights (default: the base's)")
    p.add_argument("--force", action="store_true", help=force_help("OUT"))
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip comparing the merged model's logits with base + adapter")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from tuitune.merge import export_adapter, human_size, merge, parse_size
    from tuitune.sources import resolve

    parse_size(args.max_shard_size)   # a bad size is reported before anything is read
    src = resolve(args.source, args.workspace, base=args.base, checkpoint=args.checkpoint, need="adapter")
    quiet = args.json or not sys.stderr.isatty()
    if args.export_adapter:
        from tuitune.commands import replacing

        with replacing(args, args.export_adapter):
            out = export_adapter(src, args.export_adapter, force=args.force)
        if args.json:
            print(json.dumps({"adapter": str(out), "base": str(src.base_dir)}))
        else:
            print(f"adapter written to {out} (base {src.base_dir})")
        return 0

    last = [-1]

    def progress(done, total, shard, n_shards):
        if quiet:
            return
        pct = int(100 * done / max(total, 1))
        if pct != last[0]:
            last[0] = pct
            print(f"\r  shard {shard}/{n_shards}  tensors {done}/{total}  {pct:3d}%", end="", file=sys.stderr,
                  flush=True)

    def log(line):
        if last[0] >= 0 and not quiet:
            print(file=sys.stderr)
            last[0] = -1
        if not args.json:
            print(line, flush=True)

    print_ = (lambda s: None) if args.json else (lambda s: print(s, flush=True))
    print_(f"merging {src.describe()} into {src.base_dir}")
    result = merge(src, args.output, max_shard_size=args.max_shard_size, dtype=args.dtype, force=args.force,
                   verify_result=args.verify, on_progress=progress, log=log)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return 0
    how = "streamed" if result.streamed else f"merged by peft ({result.fallback})"
    print(f"wrote {result.out}: {result.shards} shard(s), {result.tensors} tensors, {human_size(result.bytes)}, "
          f"{result.dtype}, {how}, in {result.seconds:.1f} s")
    if result.untied:
        print("embeddings untied: the adapter changed the input embeddings and the output head differently")
    if result.replaced_to:
        print(f"the folder that was there is now {result.replaced_to}")
    return 0
