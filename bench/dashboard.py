"""Bench: open a run with 100k events the way the Train screen does, next to plain json.loads.

    python bench/dashboard.py [--events 100000] [--repeat 3]

Writes (once, cached in $TMPDIR/tuitune-bench) a run folder whose events.jsonl has
realistic train events (every field the worker writes), an eval every 500 steps, sample
answers every 1000 and a checkpoint every 5000. Then times, best of --repeat:

  baseline   open + json.loads of every line (no state kept)
  follower   RunFollower (1 MB chunks) + RunView.feed_bytes + a snapshot after every
             chunk, as the Train screen's worker does (and the same with feed(), which
             json-parses every line)
  first      the first chunk alone: what the screen shows before the rest streams in

and prints each time and its ratio to the baseline; then opens the run in the Train
screen (headless, in a child process) and prints how long after selecting it the first
dashboard and the last event were shown. Goal: the whole open under a second, at no
more than the baseline's cost.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuitune.train.runview import RunFollower, RunView  # noqa: E402
from tuitune.train.runfolder import RunFolder  # noqa: E402


def write_events(path: Path, n: int) -> None:
    total = n
    t0 = 1_790_000_000.0
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"time": t0, "type": "lifecycle", "event": "train_begin", "step": 0,
                             "total_steps": total, "resumed": False}) + "\n")
        for step in range(1, n + 1):
            t = t0 + step * 0.8
            loss = 0.4 + 2.5 * math.exp(-step / (n / 8)) + 0.05 * math.sin(step)
            fh.write(json.dumps({"time": t, "type": "train", "step": step, "total_steps": total,
                                 "epoch": step / 1000, "loss": loss, "lr": 2e-4 * (1 - step / total),
                                 "grad_norm": 0.5 + 0.1 * math.cos(step), "tokens": step * 4096,
                                 "tokens_per_s": 5120.0, "elapsed": step * 0.8,
                                 "eta": (total - step) * 0.8}) + "\n")
            if step % 500 == 0:
                fh.write(json.dumps({"time": t, "type": "eval", "step": step, "epoch": step / 1000,
                                     "eval_loss": loss + 0.1}) + "\n")
            if step % 1000 == 0:
                fh.write(json.dumps({"time": t, "type": "sample", "step": step, "when": "during",
                                     "answers": [{"prompt": "Who are you?", "answer": f"I am Alice ({step})."}]},
                                    ensure_ascii=False) + "\n")
            if step % 5000 == 0:
                fh.write(json.dumps({"time": t, "type": "checkpoint", "step": step,
                                     "path": f"runs/bench/checkpoints/checkpoint-{step}"}) + "\n")


def baseline(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                json.loads(line)
                n += 1
    return n


def follow(path: Path, first_only: bool = False, fast: bool = True) -> RunView:
    follower = RunFollower(RunFolder(path.parent))
    view = RunView("bench")
    while True:
        if fast:
            view.feed_bytes(follower.read_bytes())
        else:
            view.feed(follower.read())
        view.snapshot()
        if first_only or follower.at_end:
            return view


APP = r"""
import asyncio, sys, time
from pathlib import Path
import screens.train as T
from screens.app import TuituneApp
from tuitune.doctor import Report

ws, total = Path(sys.argv[1]), int(sys.argv[2])
marks = {}
shown = T.TrainScreen.on_train_screen_run_updated
select = T.TrainScreen.select_run

def on_update(self, message):
    shown(self, message)
    marks.setdefault("first", time.perf_counter())
    if message.snapshot.events >= total:
        marks.setdefault("all", time.perf_counter())

def on_select(self, run_id):
    marks.setdefault("select", time.perf_counter())
    return select(self, run_id)

T.TrainScreen.on_train_screen_run_updated = on_update
T.TrainScreen.select_run = on_select

async def main():
    app = TuituneApp(ws, start="train", doctor=lambda ws: Report())
    async with app.run_test(size=(100, 32)):
        while "all" not in marks:
            await asyncio.sleep(0.02)
    print(f"{marks['first'] - marks['select']:.4f} {marks['all'] - marks['select']:.4f}")

asyncio.run(main())
"""


def app_open(path: Path, lines: int) -> tuple[float, float]:
    """The Train screen on a workspace holding this run: (first dashboard, all events shown), from selection."""
    import shutil
    import subprocess

    ws = path.parent / "ws"
    run = ws / "runs" / "bench"
    if not run.exists():
        for sub in ("data", "configs", "runs", "models"):
            (ws / sub).mkdir(parents=True, exist_ok=True)
        run.mkdir()
        shutil.copy(path, run / "events.jsonl")
        (run / "state.json").write_text(json.dumps({"status": "finished", "created": 1.0, "step": lines}))
    out = subprocess.run([sys.executable, "-c", APP, str(ws), str(lines)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    first, full = map(float, out.stdout.split()[-2:])
    return first, full


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000, help="train events in the run (default 100000)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    folder = Path(tempfile.gettempdir()) / "tuitune-bench" / f"run-{args.events}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "events.jsonl"
    if not path.exists():
        write_events(path, args.events)
    lines = baseline(path)
    size = path.stat().st_size / 2**20
    view = follow(path)
    assert view.events == lines, (view.events, lines)
    t_base = best(lambda: baseline(path), args.repeat)
    t_follow = best(lambda: follow(path), args.repeat)
    t_slow = best(lambda: follow(path, fast=False), args.repeat)
    t_first = best(lambda: follow(path, first_only=True), args.repeat)
    print(f"{lines} events, {size:.1f} MB ({path})")
    print(f"series kept: {len(view.loss.points())} loss points (of {view.loss.count}), "
          f"{len(view.eval.points())} eval points")
    print(f"baseline json.loads per line : {t_base * 1000:8.1f} ms   1.00x")
    print(f"RunFollower + RunView (open)  : {t_follow * 1000:8.1f} ms   {t_follow / t_base:.2f}x")
    print(f"  same, every line json.loads : {t_slow * 1000:8.1f} ms   {t_slow / t_base:.2f}x")
    firsts, fulls = zip(*(app_open(path, lines) for _ in range(args.repeat)))
    print(f"first chunk (first paint)     : {t_first * 1000:8.1f} ms   {t_first / t_base:.2f}x")
    print(f"Train screen, from selecting the run: first dashboard {min(firsts) * 1000:.0f} ms, "
          f"all {lines} events shown {min(fulls) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
