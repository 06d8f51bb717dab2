"""Startup time: `tuitune --help`, `tuitune runs status` and the TUI's first paint, next to
`python -c pass` and `python -c "import torch"`, measured in the same run and printed as ratios.

    python bench/startup.py [--repeat 5]

The goal: `tuitune --help` and first paint cost a small fraction of importing torch; `tuitune runs
status` (a script's one line per run) answers in under 0.3 s on the sample workspace (`tuitune demo`'s,
with the two recorded runs of tests/data in its runs/).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIRST_PAINT = r"""
import sys, time
t0 = float(sys.argv[1])
from screens.app import TuituneApp

class Bench(TuituneApp):
    def on_mount(self):
        super().on_mount()
        # Runs once the first frame has been rendered.
        self.call_after_refresh(self._painted)

    def _painted(self):
        heavy = ",".join(m for m in ("torch", "transformers", "peft", "datasets") if m in sys.modules)
        # Textual captures print(); write to the real stdout.
        sys.__stdout__.write(f"PAINT {time.time() - t0:.4f}\nHEAVY {heavy}\n")
        self.exit()

Bench(sys.argv[2]).run(headless=True, size=(100, 32))
"""


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def first_paint(workspace: str) -> float:
    script = Path(workspace) / "first_paint.py"
    script.write_text(FIRST_PAINT)
    t0 = time.time()
    out = subprocess.run([sys.executable, str(script), str(t0), workspace],
                         capture_output=True, text=True, check=True)
    paint = [l for l in out.stdout.splitlines() if l.startswith("PAINT ")]
    heavy = [l for l in out.stdout.splitlines() if l.startswith("HEAVY ")]
    if heavy and heavy[0].strip() != "HEAVY":
        print(f"warning: first paint imported {heavy[0][6:]}", file=sys.stderr)
    return float(paint[0].split()[1])


def sample_workspace() -> str:
    """The sample workspace with the recorded runs (a finished SFT run, a GRPO run) in its runs/."""
    import shutil

    from tuitune.sample import write_demo_workspace

    ws = write_demo_workspace(tempfile.mkdtemp(prefix="tuitune-bench-ws-")).root
    data = Path(__file__).resolve().parent.parent / "tests" / "data"
    for name, source in (("tiny-demo", "train_run"), ("tiny-grpo", "grpo_run")):
        shutil.copytree(data / source, ws / "runs" / name)
    return str(ws)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    py = sys.executable
    ws = tempfile.mkdtemp(prefix="tuitune-bench-")
    sample = sample_workspace()
    cases = {
        "python -c pass": lambda: timed([py, "-c", "pass"]),
        "python -c 'import torch'": lambda: timed([py, "-c", "import torch"]),
        "tuitune --help": lambda: timed([py, "-m", "tuitune", "--help"]),
        "tuitune runs status": lambda: timed([py, "-m", "tuitune", "-w", sample, "runs", "status"]),
        "TUI first paint": lambda: first_paint(ws),
    }
    results = {}
    for name, fn in cases.items():
        fn()  # warm the file cache
        results[name] = statistics.median(fn() for _ in range(args.repeat))
    base, torch_t = results["python -c pass"], results["python -c 'import torch'"]
    print(f"{'case':28} {'median s':>9} {'x python':>9} {'x torch':>8}")
    for name, t in results.items():
        print(f"{name:28} {t:9.3f} {t / base:9.1f} {t / torch_t:8.2f}")
    status = results["tuitune runs status"]
    print(f"tuitune runs status: {status:.3f} s on the sample workspace "
          f"({'under' if status < 0.3 else 'OVER'} the goal of 0.3 s)")


if __name__ == "__main__":
    main()
