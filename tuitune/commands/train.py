"""``tuitune train CONFIG [--name N] [--foreground]``: start a detached run."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="start a training run (detached: it survives SSH drops and closing the terminal)",
        description="Start a run from a config. The run is a process of its own: it keeps going when "
        "you log out. Follow it with `tuitune runs follow RUN` or in the TUI.")
    p.add_argument("config", help="run config YAML (see `tuitune config new`)")
    p.add_argument("--name", help="run id (default: date-time and the config's name)")
    p.add_argument("--foreground", action="store_true",
                   help="run attached to this terminal (ctrl+c checkpoints and stops)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tuitune.train.launcher import start_run

    run_folder, result = start_run(args.config, args.workspace, name=args.name, foreground=args.foreground)
    if args.foreground:
        from tuitune.train.foreground import exec_foreground

        return exec_foreground(run_folder)
    print(f"started run {run_folder.id} (pid {result}); it keeps going if you log out")
    print(f"  follow:  tuitune runs follow {run_folder.id}")
    print(f"  stop:    tuitune runs stop {run_folder.id}")
    print(f"  folder:  {run_folder.path}")
    return 0
