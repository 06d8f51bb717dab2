"""``tuitune demo [DIR] [--no-open]``: the sample workspace with the tiny model."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="write the sample workspace (sample data, tiny model, configs) and open it",
                       description="Write a sample workspace with the sample data, the tiny offline model "
                       "and the tiny-demo config, then open the TUI on it. Existing files are kept.")
    p.add_argument("dir", nargs="?", default="tuitune-demo", help="folder to write (default: ./tuitune-demo)")
    p.add_argument("--no-open", action="store_true", help="write the workspace but do not open the TUI")
    p.set_defaults(func=run)


def run(args) -> int:
    from tuitune.sample import write_demo_workspace

    print(f"writing the demo workspace in {args.dir} (the tiny model is built once, ~10 s) ...", flush=True)
    ws = write_demo_workspace(args.dir)
    files = sorted(p.relative_to(ws.root).as_posix() for p in ws.root.rglob("*")
                   if p.is_file() and "models" not in p.relative_to(ws.root).parts[:1])
    print(f"demo workspace: {ws.root}")
    print(f"  models/tiny-chat  the tiny offline chat model")
    for f in files:
        print(f"  {f}")
    if args.no_open:
        print(f"open it with: cd {args.dir} && tuitune")
        return 0
    from tuitune.cli import open_tui

    return open_tui(ws.root)
