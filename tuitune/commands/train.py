"""``tuitune train CONFIG [--name N] [--foreground] [--node-rank N ...] [--print-launch slurm [-o FILE]]``.

Layer twin: ``screens/train.py`` is the same step's screen (one name, two layers).

Start a detached run; on several machines, each node runs the same command with its own
``--node-rank`` (or prints an sbatch script that does so on a SLURM allocation).
"""

from __future__ import annotations


def _count(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number 0 or above")
    return value


def register(sub) -> None:
    from tuitune.fsutil import force_help

    p = sub.add_parser(
        "train", help="start a training run (detached: it survives SSH drops and closing the terminal)",
        description="Start a run from a config. The run is a process of its own: it keeps going when "
        "you log out. Follow it with `tuitune runs follow RUN` or in the TUI. On several machines, start "
        "the same config on each with its own --node-rank (node 0 first; the others wait up to "
        "TUITUNE_MASTER_TIMEOUT seconds, 60 by default, for it), or let SLURM do it: --print-launch slurm.")
    p.add_argument("config", metavar="CONFIG", help="run config YAML (see `tuitune config new`)")
    p.add_argument("--name", metavar="NAME", help="run id (default: date-time and the config's name); node N > 0 adds -nodeN")
    p.add_argument("--foreground", action="store_true",
                   help="run attached to this terminal (ctrl+c checkpoints and stops)")
    nodes = p.add_argument_group("several machines (each overrides the config's distributed.* for this launch)")
    nodes.add_argument("--node-rank", type=_count, metavar="N", help="this machine's rank, 0 (the master) to nnodes-1")
    nodes.add_argument("--nnodes", type=_count, metavar="N", help="machines in the job")
    nodes.add_argument("--master-addr", metavar="HOST", help="node 0's address, reachable from every node")
    nodes.add_argument("--master-port", type=_count, metavar="PORT", help="a free TCP port on node 0")
    nodes.add_argument("--print-launch", choices=("slurm",), metavar="slurm",
                       help="print an sbatch script that runs this config on every node of an allocation, "
                            "and start nothing")
    nodes.add_argument("-o", "--output", metavar="FILE", help="with --print-launch: write the script to FILE")
    nodes.add_argument("--force", action="store_true", help=f"with -o: {force_help('FILE')}")
    p.set_defaults(func=run)


def run(args) -> int:
    from tuitune.errors import TuituneError

    nodes = {key: getattr(args, key) for key in ("node_rank", "nnodes", "master_addr", "master_port")}
    if args.print_launch:
        return print_launch(args, nodes)
    if args.output:
        raise TuituneError("-o/--output is for --print-launch slurm; `tuitune train CONFIG` writes a run folder")
    from tuitune.train.launcher import start_run

    run_folder, result = start_run(args.config, args.workspace, name=args.name, foreground=args.foreground,
                                   nodes=nodes, log=lambda line: print(line, flush=True))
    if args.foreground:
        from tuitune.train.foreground import exec_foreground

        return exec_foreground(run_folder)
    print(f"started run {run_folder.id} (pid {result}); it keeps going if you log out")
    print(f"  follow:  tuitune runs follow {run_folder.id}")
    print(f"  stop:    tuitune runs stop {run_folder.id}")
    print(f"  folder:  {run_folder.path}")
    return 0


def print_launch(args, nodes: dict) -> int:
    """``--print-launch slurm``: the sbatch script, on stdout or in ``-o FILE``."""
    import sys

    from tuitune.train.multinode import slurm_script

    text = slurm_script(args.config, args.workspace, name=args.name, nodes=nodes)
    if not args.output:
        sys.stdout.write(text)
        return 0
    import os

    from tuitune.fsutil import atomic_write_text, file_mode, refuse_existing

    from tuitune.commands import replacing

    refuse_existing(args.output, force=args.force)
    with replacing(args, args.output):
        atomic_write_text(args.output, text)
        os.chmod(args.output, file_mode(executable=True))
    print(f"wrote {args.output}; submit it with: sbatch {args.output}")
    return 0
