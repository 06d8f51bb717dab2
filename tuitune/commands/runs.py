"""``tuitune runs``: list, status, follow, stop, save, resume, delete and compare runs."""

from __future__ import annotations

import json
import math
import sys
import time

RUN_HELP = "run id (or a unique part of it), as `tuitune runs list` shows it"


def register(sub) -> None:
    p = sub.add_parser("runs", help="list, status, follow, stop, save, resume, delete or compare training runs",
                       description="Runs live in the workspace's runs/ folder. Without an action: list them.")
    acts = p.add_subparsers(dest="action", metavar="ACTION")
    p.set_defaults(func=run_list, json=False)
    ls = acts.add_parser("list", help="each run's status, step, loss and age",
                         description="Each run of the workspace: status, step, last loss, age, method, model.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=run_list)
    st = acts.add_parser("status", help="one line per run: status (or stalled), step, loss, ETA, tok/s, ...",
                         description="One line per run (RUN: that run only): status (stalled: how long since its "
                         "last step), step/total, last loss, ETA, tokens/s, elapsed training time, the newest "
                         "checkpoint, the worker's peak memory, and a live run's GPU utilisation where there "
                         "is a GPU. --json: an object for RUN, a list without it.")
    st.add_argument("run", metavar="RUN", nargs="?", help=RUN_HELP + "; all runs when left out")
    st.add_argument("--json", action="store_true", help="print JSON (NaN and inf losses as the strings nan, inf)")
    st.set_defaults(func=run_status)
    f = acts.add_parser("follow", help="print a run's events as they come, until it ends",
                        description="Print RUN's train and eval losses, sample answers, checkpoints and "
                        "lifecycle events from its start, then each as it comes; ends when the run does "
                        "(exit 1 if it failed). Stopping this stops nothing. To a pipe or file: one plain "
                        "line per event line (a sample answer's line breaks and control characters escaped).")
    f.add_argument("run", metavar="RUN", help=RUN_HELP)
    f.add_argument("--json", action="store_true", help="print the raw events as JSON lines")
    f.set_defaults(func=run_follow)
    s = acts.add_parser("stop", help="checkpoint and stop a run (--kill: end it now)",
                        description="Ask RUN to stop: it saves a checkpoint after its current step and exits, "
                        "so `tuitune runs resume RUN` continues it. --kill ends its processes at once, "
                        "without a checkpoint.")
    s.add_argument("run", metavar="RUN", help=RUN_HELP)
    s.add_argument("--kill", action="store_true", help="kill the run's processes at once (no checkpoint)")
    s.add_argument("--wait", type=float, default=0, metavar="S", help="wait up to S seconds for it to stop")
    s.set_defaults(func=run_stop)
    sv = acts.add_parser("save", help="write a checkpoint at the next step",
                         description="Ask RUN to save a checkpoint after its current step, and go on training.")
    sv.add_argument("run", metavar="RUN", help=RUN_HELP)
    sv.set_defaults(func=run_save)
    r = acts.add_parser("resume", help="continue a stopped or failed run from its newest checkpoint",
                        description="Continue RUN (stopped or failed) from its newest complete checkpoint, or "
                        "from --checkpoint N, with its frozen config.yaml, in the same run folder; detached "
                        "unless --foreground.")
    r.add_argument("run", metavar="RUN", help=RUN_HELP)
    r.add_argument("--checkpoint", metavar="N", help="resume from checkpoint-N instead of the newest "
                   "(later checkpoints are moved to checkpoints/.superseded-*/, not deleted)")
    r.add_argument("--foreground", action="store_true", help="run attached to this terminal")
    r.set_defaults(func=run_resume)
    d = acts.add_parser("delete", help="delete a run folder (never a running run)",
                        description="Delete RUN's folder: config, events, checkpoints and adapter. A running "
                        "run is refused: stop it first.")
    d.add_argument("run", metavar="RUN", help=RUN_HELP)
    d.add_argument("--json", action="store_true", help="print what was deleted as JSON")
    d.set_defaults(func=run_delete)
    c = acts.add_parser("compare", help="two runs side by side: the settings that differ, the final figures",
                        description="The settings that differ between the two runs' frozen config.yaml, and "
                        "their figures: steps, last and best train and eval loss, tokens/s, time.")
    c.add_argument("a", metavar="RUN_A", help=RUN_HELP)
    c.add_argument("b", metavar="RUN_B", help="the other run")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(func=run_compare)


def runs_table(workspace, now: float | None = None) -> list[dict]:
    """Each run as a dict (``runs list --json``), from the same rows the Train screen shows."""
    from dataclasses import asdict

    from tuitune.train.watch import run_rows

    now = time.time() if now is None else now
    rows = []
    for r in run_rows(workspace):
        stalled = r.stalled_since is not None  # (judge_stall sets it for running runs only)
        rows.append({**asdict(r), "status": "stalled" if stalled else r.status,
                     "stalled_for": now - r.stalled_since if stalled else None,
                     "age": now - r.created if r.created else None})
    return rows


def run_list(args) -> int:
    rows = runs_table(args.workspace)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no runs yet; start one with `tuitune train configs/NAME.yaml`")
        return 0
    from rich.console import Console
    from rich.table import Table

    from tuitune.render import RUN_STATUS_STYLE
    from tuitune.train.formatting import format_age, format_duration

    table = Table(expand=False)
    for col in ("run", "status", "step", "loss", "age", "method", "model"):
        table.add_column(col, justify="right" if col in ("step", "loss", "age") else "left",
                         no_wrap=col != "model", overflow="ellipsis" if col == "model" else "fold")
    for r in rows:
        total = r["total_steps"]
        step = f"{r['step']}/{total}" if total else str(r["step"])
        loss = f"{r['last_loss']:.4f}" if r["last_loss"] is not None else "-"
        shown = f"stalled {format_duration(r['stalled_for'])}" if r["status"] == "stalled" else r["status"]
        table.add_row(r["id"], f"[{RUN_STATUS_STYLE.get(r['status'], '')}]{shown}[/]", step, loss,
                      format_age(r["age"]), r["method"] or "", r["model"] or "")
    console = Console()
    console.print(table)
    for r in rows:
        if r["status"] == "failed" and r["error"]:
            console.print(f"[red]{r['id']}[/]: {r['error']}", highlight=False)
        elif r["status"] == "stalled":
            console.print(f"[{RUN_STATUS_STYLE['stalled']}]{r['id']}[/]: {stalled_hint(r['id'], r['stalled_for'])}",
                          highlight=False)
    return 0


def stalled_hint(run_id: str, seconds: float) -> str:
    from tuitune.train.formatting import format_duration

    return (f"stalled: no step for {format_duration(seconds)}; `tuitune runs follow {run_id}` shows its events, "
            f"`tuitune runs stop {run_id} --kill` ends it")


def _plain_json(value):
    """NaN and inf as the strings ``nan``, ``inf``, ``-inf`` (JSON has no such numbers; jq refuses them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_json(v) for v in value]
    return value


def status_line(s: dict) -> str:
    """One run's ``runs status`` line: fields apart by two spaces, ``-`` for what is not known."""
    from tuitune.train.formatting import format_duration, format_loss, format_rate, format_steps

    status = s["status"] + (f" (no step for {format_duration(s['stalled_for'])})" if s["status"] == "stalled" else "")
    peak = (f"peak {s['peak_memory'] / 2**30:.2f} GiB {s['peak_memory_of'] or ''}".rstrip()
            if s.get("peak_memory") else "peak -")
    recent = s["tokens_per_s_recent"] and s["tokens_per_s"] is not None  # a live run's last window
    parts = [s["id"], status, f"step {format_steps(s['step'], s['total_steps'])}", f"loss {format_loss(s['loss'])}",
             f"eta {format_duration(s['eta'])}",
             f"{format_rate(s['tokens_per_s'])} tok/s" + (" (recent)" if recent else ""),
             f"elapsed {format_duration(s['elapsed'])}",
             "checkpoint " + (s["last_checkpoint"].rsplit("/", 1)[-1] if s["last_checkpoint"] else "-"), peak]
    if s.get("gpus"):
        parts.append("gpu " + ", ".join(f"{g['index']}: {'-' if g['util'] is None else g['util']}% "
                                        f"{g['used_gib']:.1f}/{g['total_gib']:.0f} GiB" for g in s["gpus"]))
    if s.get("error") and s["status"] in ("failed", "stopped"):
        parts.append(f"error: {s['error']}")
    return "  ".join(parts)


def run_status(args) -> int:
    from tuitune.gpus import GpuProbe, gpu_driver_present
    from tuitune.train.runfolder import find_run, list_runs
    from tuitune.train.watch import run_status as status_of

    runs = [find_run(args.workspace, args.run)] if args.run else list_runs(args.workspace)
    probe = GpuProbe() if gpu_driver_present() else None  # no NVML (and no import of it) without a GPU driver
    found = [status_of(r, probe=probe) for r in runs]
    if args.json:
        print(json.dumps(_plain_json(found[0] if args.run else found), ensure_ascii=False, indent=2))
        return 0
    if not found:
        print("no runs yet; start one with `tuitune train configs/NAME.yaml`")
    for s in found:
        print(status_line(s))
    return 0


#: Control characters as escapes (a line break as \\n): a pipe gets one line per line of an event.
_ESCAPES = {i: f"\\x{i:02x}" for i in (*range(0x20), *range(0x7f, 0xa0))} | {
    ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}


def one_line(text: str) -> str:
    """``text`` on one plain line: line breaks, carriage returns and terminal escapes written as escapes."""
    return text.translate(_ESCAPES)


def format_event(e: dict, plain: bool = False) -> str | None:
    """An event as ``runs follow`` prints it. ``plain`` (a pipe or file): a prompt's, answer's or message's
    line breaks and control characters escaped, so each printed line is one line of the event."""
    from tuitune.train.formatting import format_duration, format_grpo, format_rate, format_rewards, format_scores

    text = one_line if plain else str
    t = e.get("type")
    if t == "train":
        parts = [f"step {e.get('step')}/{e.get('total_steps')}", f"loss {e.get('loss'):.4f}"]
        parts += [f"{label} {value}" for label, value in format_rewards(e)]  # a preference run's
        parts += [f"{label} {value}" for label, value in format_grpo(e)]  # a GRPO run's
        if e.get("lr") is not None:
            parts.append(f"lr {e['lr']:.2e}")
        if e.get("tokens_per_s"):
            parts.append(f"{format_rate(e['tokens_per_s'])} tok/s")  # this window's
        if e.get("eta") is not None:
            parts.append(f"eta {format_duration(e['eta'])}")
        return "  ".join(parts)
    if t == "eval":
        return "  ".join([f"step {e.get('step')}", f"eval loss {e.get('eval_loss'):.4f}",
                          *(f"eval {label} {value}" for label, value in format_rewards(e, "eval_")),
                          *(f"eval {label} {value}" for label, value in format_grpo(e, "eval_"))])
    if t == "sample":
        completions = e.get("when") == "completions"  # a GRPO run's sampled completions, scored
        lines = [f"step {e.get('step')}  " + ("sampled completions and their rewards:" if completions
                                              else f"sample answers ({e.get('when')}):")]
        prompt = None
        for a in e.get("answers", []):
            if not (completions and a["prompt"] == prompt):  # a group's completions: its prompt once
                lines.append(f"  Q: {text(a['prompt'])}")
            prompt = a["prompt"]
            lines.append(f"  A: {text(a['answer'])}")
            if completions:
                lines.append(f"     {format_scores(a.get('reward'), a.get('rewards') or {})}")
        return "\n".join(lines)
    if t == "checkpoint":
        return f"step {e.get('step')}  checkpoint saved: {e.get('path')}"
    if t == "lifecycle":
        ev = e.get("event")
        if ev == "stalled":  # the worker's watchdog (tuitune.train.watchdog)
            extra = (f"step {e.get('step')}: no step for {format_duration(e.get('idle'))} (the slowest took "
                     f"{format_duration(e.get('slowest_step'))})")
        elif ev == "resumed progress":
            extra = f"step {e.get('step')}, after {format_duration(e.get('stalled_for'))} stalled"
        elif ev == "save_skipped":
            extra = f"step {e.get('step')}: {e.get('reason')}"
        else:
            extra = e.get("error") or e.get("output") or e.get("checkpoint") or ""
        return f"[{ev}] {text(str(extra))}".rstrip()
    return None


def run_follow(args) -> int:
    from tuitune.train.formatting import format_duration, format_rate
    from tuitune.train.runfolder import ENDED, find_run, parse_lines
    from tuitune.train.watch import RunWatcher

    run = find_run(args.workspace, args.run)
    # The Train screen's watcher, without the log tail or GPUs; the state at every look.
    watcher = RunWatcher(run, log_lines=0, state_every=0)
    plain = not sys.stdout.isatty()  # a pipe or a file: one plain line per line
    while True:
        poll = watcher.poll()
        for e in parse_lines(poll.data):
            line = json.dumps(e, ensure_ascii=False) if args.json else format_event(e, plain)
            if line:
                print(line)
        sys.stdout.flush()
        if not poll.caught_up:
            continue
        if poll.status in ENDED:
            st = poll.state
            snap = watcher.view.snapshot()
            if snap.average_tokens_per_s and not args.json:  # each step line's tok/s is its window's
                print(f"{snap.tokens:,} tokens in {format_duration(snap.elapsed)}: "
                      f"{format_rate(snap.average_tokens_per_s)} tok/s over the whole run", flush=True)
            print(f"run {run.id} {st['status']}" + (f": {st['error']}" if st.get("error") else ""),
                  file=sys.stderr)
            return 0 if st["status"] != "failed" else 1
        time.sleep(0.5)


def run_stop(args) -> int:
    from tuitune.train.launcher import stop_run

    run = stop_run(args.workspace, args.run, kill=args.kill, wait=args.wait)
    st = run.status()
    if args.kill:
        print(f"killed run {run.id}")
    elif st.get("status") in ("stopped", "finished", "failed"):
        print(f"run {run.id} {st['status']}" + (f" at {st.get('last_checkpoint')}" if st.get("last_checkpoint") else ""))
    else:
        print(f"asked run {run.id} to stop: it checkpoints after its current step, then exits")
    return 0


def run_save(args) -> int:
    from tuitune.train.launcher import save_now

    run = save_now(args.workspace, args.run)
    print(f"asked run {run.id} to save a checkpoint at its next step")
    return 0


def run_resume(args) -> int:
    from tuitune.train.launcher import resume_run

    run, result = resume_run(args.workspace, args.run, foreground=args.foreground, checkpoint=args.checkpoint)
    st = run.read_state()
    if args.checkpoint is not None:
        aside = f"; later checkpoints moved to {st['superseded']}" if st.get("superseded") else ""
        print(f"resuming run {run.id} from {st.get('resumed_from')}{aside}", flush=True)
    if args.foreground:
        from tuitune.train.foreground import exec_foreground

        return exec_foreground(run, resume=True)
    print(f"resumed run {run.id} (pid {result}); follow it with `tuitune runs follow {run.id}`")
    return 0


def run_delete(args) -> int:
    from tuitune.train.launcher import delete_run

    run = delete_run(args.workspace, args.run)
    if args.json:
        print(json.dumps({"deleted": run.id, "path": str(run.path)}))
    else:
        print(f"deleted run {run.id} ({run.path})")
    return 0


def run_compare(args) -> int:
    from tuitune.train.compare import cell, compare_runs, figure_rows

    result = compare_runs(args.workspace, args.a, args.b)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text  # cells as plain text: a value such as "[INST]" is not markup

    console = Console()
    a, b = result["a"], result["b"]
    if result["settings"] is None:
        console.print(f"settings: {result['settings_note']}", highlight=False)
    elif not result["settings"]:
        console.print("settings: the same in both runs' config.yaml", highlight=False)
    else:
        table = Table(title="settings that differ", title_justify="left", expand=False)
        for col in ("field", a, b):
            table.add_column(col, overflow="fold")
        for row in result["settings"]:
            table.add_row(row["field"], Text(cell(row["a"])), Text(cell(row["b"])))
        console.print(table)
    table = Table(title="figures", title_justify="left", expand=False)
    table.add_column("figure")
    table.add_column(a, justify="right", overflow="fold")
    table.add_column(b, justify="right", overflow="fold")
    for row in figure_rows(result):
        table.add_row(*map(Text, row))
    console.print(table)
    for key in ("a", "b"):
        error = result["figures"][key]["error"]
        if result["figures"][key]["status"] == "failed" and error:
            console.print(Text(f"{result[key]}: {error}", style="red"))
    return 0
