"""Two training runs at once on a CPU-only machine against one alone (issue 20, item 16).

    python bench/cores.py                  # the smol-demo run (SmolLM2-135M-Instruct), 30 steps
    python bench/cores.py --model tiny     # the tiny-demo run on the tiny model
    python bench/cores.py --unshared       # also the pair the old way: each process on every core
    python bench/cores.py --steps 1        # a smoke run: it works (the figures mean nothing)

Measures tokens/s (real, non-padding tokens from the runs' events, logged every step, clock
from step ``--warmup``) of ONE `tuitune train` alone, then of TWO started together, each a
detached worker as the CLI starts it. The pair's figure is their combined tokens/s over the
time both were training (each run's token count interpolated at the window's ends), as a
ratio of one alone. Goal: >= 0.8x. Before tuitune.cores, on a 2-core box each of the pair
fell to about 21 tokens/s against 235 alone (0.18x); ``--unshared`` measures that case again,
with OMP_NUM_THREADS set to every core for both (a user's count is kept, so nothing is shared).

It prints the machine first: the CPU's model, its cores (as tuitune counts them) and the flags
that decide ``precision: auto``, and what auto picked here (``TUITUNE_AUTO_PRECISION`` forces
it). The runs claim their cores in a fresh claims folder (``TUITUNE_CORES_DIR``), so processes
outside the bench are not counted: run it on a quiet machine, where nothing else uses the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The flags that decide what precision auto picks on a CPU, and the vector width in use.
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def machine() -> list[str]:
    """The CPU (model, cores, flags) and what ``precision: auto`` picks on it."""
    from tuitune.hardware import auto_precision
    from tuitune.cores import cpu_cores

    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name") and name == "unknown CPU":
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    precision, why = auto_precision()
    return [f"cpu: {name}; {cpu_cores()} cores as tuitune counts them ({os.cpu_count()} logical CPUs)",
            f"flags: {' '.join(f for f in FLAGS if f in flags) or 'none of ' + ', '.join(FLAGS)}",
            f"precision: auto picks {precision} ({why})"]


def write_config(ws: Path, model: str, steps: int) -> Path:
    """The demo's config (smol-demo or tiny-demo), every step logged, no checkpoint or sample inside."""
    from tuitune.config import RunConfig, load_config, save_config
    from tuitune.config.schema import flatten, unflatten

    src = ws / "configs" / ("smol-demo.yaml" if model == "real" else "tiny-demo.yaml")
    flat = flatten(load_config(src, workspace=ws).model_dump(mode="json"))
    flat.update({"training.max_steps": steps, "training.logging_steps": 1, "training.save_steps": 100000,
                 "evaluation.prompts": [], "evaluation.eval_loss": False})
    path = ws / "configs" / "bench-cores.yaml"
    save_config(RunConfig.model_validate(unflatten(flat)), path)
    return path


def start(ws: Path, cfg: Path, name: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tuitune", "-w", str(ws), "train", str(cfg), "--name", name],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_runs(ws: Path, names: list[str], launchers: list[subprocess.Popen]) -> None:
    from tuitune.train.runfolder import ENDED, RunFolder

    for p in launchers:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"tuitune train failed:\n{out[-3000:]}")
    runs = [RunFolder(ws / "runs" / n) for n in names]
    while True:
        states = [r.status() for r in runs]
        if all(s.get("status") in ENDED for s in states):
            break
        time.sleep(0.5)
    for run, st in zip(runs, states):
        if st["status"] != "finished":
            raise SystemExit(f"run {run.id} {st['status']}: {st.get('error')}\n" + "\n".join(run.log_tail(20)))


def points(ws: Path, name: str) -> list[tuple[float, int]]:
    """(time, tokens trained) at the start of training and after each step (logged every step)."""
    from tuitune.train.runfolder import RunFolder

    out = []
    for e in RunFolder(ws / "runs" / name).iter_events():
        if e.get("type") == "lifecycle" and e.get("event") == "train_begin":
            out = [(e["time"], 0)]
        elif e.get("type") == "train":
            out.append((e["time"], e.get("tokens") or 0))
    return out


def tokens_at(pts: list[tuple[float, int]], t: float) -> float:
    """A run's tokens at time ``t``, linear between its logged steps."""
    if t <= pts[0][0]:
        return pts[0][1]
    for (ta, na), (tb, nb) in zip(pts, pts[1:]):
        if t <= tb:
            return na + (nb - na) * (t - ta) / (tb - ta) if tb > ta else nb
    return pts[-1][1]


def combined_rate(series: list[list[tuple[float, int]]], warmup: int) -> tuple[float, float]:
    """(tokens/s of all the runs together, seconds) over the time every run was past its warm-up and
    none had ended yet; where they never overlapped, the sum of each run's own rate."""
    t0 = max(s[min(warmup, len(s) - 1)][0] for s in series)
    t1 = min(s[-1][0] for s in series)
    if t1 > t0:
        return sum(tokens_at(s, t1) - tokens_at(s, t0) for s in series) / (t1 - t0), t1 - t0
    own = [(s[-1][1] - s[min(warmup, len(s) - 1)][1]) / max(1e-9, s[-1][0] - s[min(warmup, len(s) - 1)][0])
           for s in series]
    return sum(own), 0.0


def thread_lines(ws: Path, name: str) -> list[str]:
    log = (ws / "runs" / name / "train.log").read_text(encoding="utf-8", errors="replace")
    return [line.strip() for line in log.splitlines() if "CPU thread" in line]


def case(ws: Path, cfg: Path, names: list[str], env: dict, warmup: int) -> dict:
    wait_runs(ws, names, [start(ws, cfg, n, env) for n in names])
    series = [points(ws, n) for n in names]
    rate, seconds = combined_rate(series, warmup)
    return {"tokens_per_s": rate, "seconds": seconds, "threads": {n: thread_lines(ws, n) for n in names}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("real", "tiny"), default="real",
                    help="real: the smol-demo run on SmolLM2-135M-Instruct (issue 20's case); tiny: the tiny-demo run")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps of each run (default 30)")
    ap.add_argument("--warmup", type=int, default=5, help="steps before the clock starts (default 5)")
    ap.add_argument("--unshared", action="store_true",
                    help="also the pair with every process on every core (OMP_NUM_THREADS set for both: the old way)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (runs, logs)")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be 1 or more and --warmup 0 or more")
    warmup = min(args.warmup, args.steps - 1)
    from tuitune.cores import cpu_cores
    from tuitune.sample import write_demo_workspace

    for line in machine():
        print(line)
    tmp = Path(tempfile.mkdtemp(prefix="tuitune-bench-cores-"))
    ws = write_demo_workspace(tmp / "ws", real=args.model == "real", log=lambda m: print("  ", m)).root
    cfg = write_config(ws, args.model, args.steps)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["TUITUNE_CORES_DIR"] = str(tmp / "cores")
    print(f"run: {args.model}-demo config, {args.steps} steps each, clock from step {warmup}")
    cases = [("one alone", ["one"], env), ("two at once", ["pair-a", "pair-b"], env)]
    if args.unshared:
        every = str(cpu_cores())
        cases.append(("two at once, unshared", ["old-a", "old-b"],
                      {**env, "OMP_NUM_THREADS": every, "MKL_NUM_THREADS": every}))
    res = {}
    for label, names, case_env in cases:
        print(f"  {label}…", flush=True)
        res[label] = case(ws, cfg, names, case_env, warmup)
    alone = res["one alone"]["tokens_per_s"]
    print(f"\n{'case':24} {'tokens/s':>9} {'x alone':>8} {'overlap':>8}")
    for label, r in res.items():
        overlap = f"{r['seconds']:.0f}s" if label != "one alone" else "-"
        print(f"{label:24} {r['tokens_per_s']:9.0f} {r['tokens_per_s'] / alone:8.2f} {overlap:>8}")
    for label, r in res.items():
        for name, lines in r["threads"].items():
            for line in lines:
                print(f"  {name}: {line}")
    ratio = res["two at once"]["tokens_per_s"] / alone
    print(f"goal: two at once >= 0.8x one alone (combined tokens/s): {ratio:.2f}x {'PASS' if ratio >= 0.8 else 'FAIL'}")
    if res["two at once"]["seconds"] == 0:
        print("  (the two runs never trained at the same time: too few steps; the figure adds their own rates)")
    if args.keep:
        print(f"work folder kept: {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({k: {"tokens_per_s": round(v["tokens_per_s"], 1), "overlap_s": round(v["seconds"], 1)}
                      for k, v in res.items()}))


if __name__ == "__main__":
    main()
