"""Bench: convert a 100k-row MedQA-layout xlsx; rows/s and peak RSS against pandas.

    python bench/data.py [--rows 100000] [--keep]

Builds (once, cached in $TMPDIR/tuitune-bench) a workbook with MedQA's columns and
realistic lengths (answers of 200-2400 characters), then runs, each in a fresh process
so peak RSS is its own:

  tuitune   tuitune.data.convert(xlsx, out.jsonl, preset="medqa")
  pandas    pd.read_excel(dtype=str, keep_default_na=False) + json.dumps per record

Goal: tuitune at least as fast as pandas, with under a third of its peak RSS.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
mode, src, out = sys.argv[1:4]
t0 = time.perf_counter()
if mode == "tuitune":
    from tuitune.data.convert import convert
    rows = convert(src, out, preset="medqa").kept
else:
    import pandas as pd
    from tuitune.data.convert import MEDQA_SYSTEM
    df = pd.read_excel(src, sheet_name="DrugQA", dtype=str, keep_default_na=False)
    rows = 0
    with open(out, "w", encoding="utf-8") as fh:
        for q, a in zip(df["Question"], df["Answer"]):
            if q.strip() and a.strip():
                fh.write(json.dumps({"conversation": [{"system": MEDQA_SYSTEM, "input": q, "output": a}]},
                                    ensure_ascii=False) + "\n")
                rows += 1
dt = time.perf_counter() - t0
print(json.dumps({"rows": rows, "seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def build(rows: int) -> Path:
    from tuitune.data.synth import write_medqa_xlsx

    d = Path(tempfile.gettempdir()) / "tuitune-bench"
    path = d / f"medqa_{rows}_sst.xlsx"  # Excel layout: shared strings, <dimension>
    if not path.exists():
        t0 = time.perf_counter()
        tmp = d / f".medqa_{rows}.{os.getpid()}.tmp.xlsx"
        write_medqa_xlsx(tmp, rows, seed=0)
        os.replace(tmp, path)
        print(f"built {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    return path


def run(mode: str, src: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(out)], capture_output=True,
                          text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{mode} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    src = build(args.rows)
    with tempfile.TemporaryDirectory() as td:
        res = {m: run(m, src, Path(td) / f"{m}.jsonl") for m in ("tuitune", "pandas")}
        same = (Path(td) / "tuitune.jsonl").read_bytes() == (Path(td) / "pandas.jsonl").read_bytes()
    print(f"{'':10}{'rows':>9}{'seconds':>10}{'rows/s':>10}{'peak RSS MB':>13}")
    for m, r in res.items():
        print(f"{m:10}{r['rows']:>9}{r['seconds']:>10.1f}{r['rows'] / r['seconds']:>10.0f}{r['peak_rss_mb']:>13.0f}")
    t, p = res["tuitune"], res["pandas"]
    speed = (t["rows"] / t["seconds"]) / (p["rows"] / p["seconds"])
    mem = t["peak_rss_mb"] / p["peak_rss_mb"]
    print(f"speed {speed:.2f}x pandas (goal >= 1), peak RSS {mem:.2f} of pandas (goal < 0.33), "
          f"byte-identical output: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
