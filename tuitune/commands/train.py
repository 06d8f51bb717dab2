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
    nodes.add_argument("--force", action="store_true", help=f"with -o or --write: {force_help('FILE')}; with "
                       "--probe: probe while a run of this workspace trains")
    probe = p.add_argument_group("will it fit, and when will it end (start nothing)")
    probe.add_argument("--probe", action="store_true",
                       help="run a few optimizer steps of CONFIG here on the longest batch its data makes: peak memory, "
                            "step time, tokens/s, one save and one evaluation round, the ETA of the whole run, the "
                            "estimate beside them; where it does not fit, the first change of the ladder that does. "
                            "Leaves probes/CONFIG-TIME/probe.json only. Exit 0: fits; 1: does not fit as it is")
    probe.add_argument("--warmup", type=_count, default=2, metavar="N", help="with --probe: untimed steps first (2)")
    probe.add_argument("--steps", type=_count, default=3, metavar="N", help="with --probe: timed steps (3)")
    probe.add_argument("--max-memory", metavar="SIZE", help="with --probe: the most memory a run may take here "
                       "(2GB, 1.5GiB): RSS on a CPU, per GPU on GPUs; default what the box has")
    probe.add_argument("--write", metavar="FILE", help="with --probe: save the first change that fits as a new config")
    probe.add_argument("--json", action="store_true", help="with --probe: print probe.json instead of the lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from tuitune.errors import TuituneError

    nodes = {key: getattr(args, key) for key in ("node_rank", "nnodes", "master_addr", "master_port")}
    if args.probe:
        return probe(args)
    for flag, given in (("--write", args.write), ("--max-memory", args.max_memory), ("--json", args.json)):
        if given:
            raise TuituneError(f"{flag} is for --probe (tuitune train CONFIG --probe {flag} ...)")
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


def probe(args) -> int:
    """``--probe``: measure CONFIG here (tuitune.train.probe); 0 when it fits as it is, 1 when not."""
    import json

    from tuitune.errors import TuituneError
    from tuitune.train.probe import parse_memory, probe_config

    if args.steps < 1:
        raise TuituneError("--steps 0: time at least one step (--steps 3 is the default)")
    if args.print_launch or args.output or args.foreground or args.name:
        raise TuituneError("--probe starts no run: leave out --print-launch, -o, --foreground and --name")
    result = probe_config(args.config, args.workspace, warmup=args.warmup, steps=args.steps,
                          max_memory=parse_memory(args.max_memory), force=args.force, write=args.write,
                          log=(lambda line: None) if args.json else (lambda line: print(line, flush=True)))
    print(json.dumps(result.to_dict(), indent=2) if args.json else "\n".join(result.lines()))
    return 0 if result.fits else 1


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
