"""tuitune on one GPU: a 7B-shaped model by QLoRA and LoRA, and the tiny demo, through `tuitune train`.

    python bench/gpu.py [--dir DIR] [--steps 10] [--tiny-steps N] [--no-unpacked]

Bench-only dependencies: none beyond tuitune's own (torch with CUDA, bitsandbytes for QLoRA).
Meant to finish in under 8 minutes on one H200. On a GPU it:
  1. builds a random-init model of Qwen2.5-7B's shape (Qwen2Config with its real dims: hidden
     3584, intermediate 18944, 28 layers, 28 heads, 4 KV heads, vocab 152064; nothing is
     downloaded): made on the GPU in bf16, saved once as a folder (``DIR/qwen2.5-7b-shape``,
     default ``~/.cache/tuitune/bench``) with the tiny model's tokenizer, in a child process;
  2. runs `tuitune train CONFIG --foreground` (configs written with tuitune's config API) on
     MedQA-like data (bench/train.py's lengths), max_length 2048, batch 1, gradient
     checkpointing, 10 steps, LoRA r=64 on all linear layers, for: QLoRA nf4 packed, LoRA bf16
     packed (packed rows run attention per sample, tuitune.train.attention), LoRA bf16 unpacked;
  3. runs the tiny-demo preset through `tuitune train` (the plain `tuitune demo` workspace);
  4. prints, per run, peak ``torch.cuda.max_memory_allocated`` next to
     `tuitune env --estimate MODEL --method M --max-length 2048 --batch-size 1 --lora-r 64 --json`,
     tokens/s (real tokens, from events.jsonl, after the first 2 steps) and the wall time.

How the GPU peak is taken: tuitune's worker does not log GPU memory (events.jsonl has loss, lr,
grad_norm, tokens/s), and the bench must not change the engine. So the runs go through the real
CLI and worker unchanged, and a ``sitecustomize.py`` that the bench puts on ``PYTHONPATH`` (only
for these runs; the launcher passes the environment on) registers an exit hook in every Python
process: the worker, at exit, appends ``torch.cuda.max_memory_allocated()`` to a file named by
``TUITUNE_BENCH_CUDA_MEM``.

Without a GPU it runs what runs on a CPU (the tiny-demo run, and the estimates for the 7B shape
from its config.json alone) and says what it skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

#: Qwen2.5-7B's architecture (its config.json), without the weights.
QWEN25_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rope_theta=1000000.0,
                 rms_norm_eps=1e-6, tie_word_embeddings=False, hidden_act="silu", sliding_window=None,
                 use_sliding_window=False)
MAX_LENGTH, LORA_R, CLOCK_FROM = 2048, 64, 2
#: --small-shape: the same code path on a small Qwen2, on the CPU, to check the script without a GPU.
SMALL = dict(QWEN25_7B, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=16000)

SITECUSTOMIZE = textwrap.dedent(r'''
    # Written by bench/gpu.py: report this process's peak CUDA memory at exit.
    import atexit, json, os, sys

    _out = os.environ.get("TUITUNE_BENCH_CUDA_MEM")

    def _report():
        torch = sys.modules.get("torch")
        try:
            if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
                return
            row = {"pid": os.getpid(), "argv": sys.argv[:3],
                   "max_allocated": torch.cuda.max_memory_allocated(),
                   "max_reserved": torch.cuda.max_memory_reserved()}
        except Exception:
            return
        with open(_out, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    if _out:
        atexit.register(_report)
''')

BUILD = textwrap.dedent(r'''
    import json, shutil, sys, time, torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    out, tok_dir, dims, device = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    t = time.time()
    cfg = Qwen2Config(**dims, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg.dtype = "bfloat16"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)  # initialised on the GPU: seconds, not the minutes of a CPU init
    torch.set_default_dtype(torch.float32)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out, max_shard_size="4GB")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        try:
            shutil.copy(f"{tok_dir}/{name}", f"{out}/{name}")
        except FileNotFoundError:
            pass
    print("BUILT", n, time.time() - t)
''')


def cuda() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        return None


def tuitune(*args, env=None, cwd=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "tuitune", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise SystemExit(f"`tuitune {' '.join(map(str, args))}` failed (exit {proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def estimate(model: Path, method: str, max_length: int, batch: int, r: int) -> dict:
    out = tuitune("env", "--estimate", model, "--method", method, "--max-length", max_length, "--batch-size",
                  batch, "--lora-r", r, "--gradient-checkpointing", "--json").stdout
    return json.loads(out)


def write_config(ws: Path, name: str, base: dict, overrides: dict) -> Path:
    """A run config through tuitune's own API: ``base`` (a preset's or the schema's) + overrides."""
    from tuitune.config import RunConfig, save_config
    from tuitune.config.schema import flatten, unflatten

    flat = {**base, **overrides}
    path = ws / "configs" / f"{name}.yaml"
    save_config(RunConfig.model_validate(unflatten(flat)), path)
    return path


def schema_defaults(model: str) -> dict:
    from tuitune.config import RunConfig
    from tuitune.config.schema import flatten

    return flatten(RunConfig(model=model).model_dump(mode="json"))


def preset(name: str) -> dict:
    from tuitune.config import get_preset
    from tuitune.config.schema import flatten

    return flatten(get_preset(name).model_dump(mode="json"))


def train(ws: Path, cfg: Path, name: str, env: dict, mem_file: Path, clock_from: int) -> dict:
    """`tuitune train CFG --foreground`; tokens/s from the events, peak CUDA memory from the hook."""
    from train_helpers import events

    mem_file.unlink(missing_ok=True)
    t = time.time()
    proc = tuitune("-w", ws, "train", cfg, "--foreground", "--name", name, env={**env, "TUITUNE_BENCH_CUDA_MEM":
                                                                              str(mem_file)}, check=False)
    wall = time.time() - t
    run = ws / "runs" / name
    if proc.returncode != 0:
        log = (run / "train.log").read_text(errors="replace") if (run / "train.log").exists() else proc.stdout
        raise SystemExit(f"tuitune train {cfg.name} failed (exit {proc.returncode}):\n{log[-4000:]}\n"
                         f"{proc.stderr[-2000:]}")
    ev = {e["step"]: e for e in events(run, "train")}
    last = max(ev)
    first = clock_from if clock_from in ev and clock_from < last else min(ev)
    a, b = ev[first], ev[last]
    tps = (b["tokens"] - a["tokens"]) / (b["time"] - a["time"]) if b["time"] > a["time"] else None
    rows = [json.loads(l) for l in mem_file.read_text().splitlines()] if mem_file.exists() else []
    rows = [r for r in rows if any("worker" in str(x) for x in r["argv"])] or rows
    log = (run / "train.log").read_text(errors="replace")
    return {"tokens_per_s": tps, "wall": wall, "steps": last, "loss": b.get("loss"),
            "max_allocated": max((r["max_allocated"] for r in rows), default=None),
            "max_reserved": max((r["max_reserved"] for r in rows), default=None),
            "per_sample_attention": "attention runs per sample" in log}


def gib(x) -> str:
    return f"{x / 2**30:8.2f}" if x is not None else f"{'n/a':>8}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="where the 7B-shaped model is saved (default ~/.cache/tuitune/bench)")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per 7B run (default 10)")
    ap.add_argument("--records", type=int, default=400, help="MedQA-like records for the 7B runs")
    ap.add_argument("--tiny-steps", type=int, help="steps of the tiny-demo run (default: the preset's)")
    ap.add_argument("--no-unpacked", action="store_true", help="skip the unpacked LoRA run (saves ~1 min)")
    ap.add_argument("--keep", action="store_true", help="keep the workspace (runs, logs)")
    ap.add_argument("--small-shape", action="store_true",
                    help="check the 7B path without a GPU: a small Qwen2 shape, built and trained on the CPU "
                         "(LoRA only, max_length 256)")
    args = ap.parse_args()
    t_start = time.time()
    sys.path.insert(0, str(ROOT / "tests"))
    from tuitune.sample import cache_root, tiny_model_path

    gpu = cuda()
    print(f"device: {gpu or 'no CUDA GPU: running the CPU part only'}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="tuitune-bench-gpu-"))
    hook = tmp / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(hook), *filter(None, [env.get("PYTHONPATH")])])
    skipped: list[str] = []
    results: list[tuple[str, dict, dict | None]] = []
    try:
        # --- the tiny demo, as a user gets it ------------------------------------------------
        tiny_ws = tmp / "tiny-demo"
        tuitune("demo", tiny_ws, "--no-open")
        over = {"model": "models/tiny-chat"}
        if args.tiny_steps:
            over["training.max_steps"] = args.tiny_steps
        cfg = write_config(tiny_ws, "tiny-demo-bench", preset("tiny-demo"), over)
        print("tiny-demo: tuitune train ...", flush=True)
        got = train(tiny_ws, cfg, "tiny-demo", env, tmp / "mem-tiny.jsonl", clock_from=5)
        results.append(("tiny-demo (preset, fp32)", got, None))

        # --- the 7B shape ----------------------------------------------------------------------
        tok_dir = tiny_model_path()
        ws = tmp / "ws"
        from tuitune.workspace import Workspace

        Workspace.at(ws).ensure()
        shape_only = tmp / "qwen2.5-7b-shape-config"
        shape_only.mkdir()
        (shape_only / "config.json").write_text(json.dumps({"architectures": ["Qwen2ForCausalLM"],
                                                            "model_type": "qwen2", "torch_dtype": "bfloat16",
                                                            **QWEN25_7B}))
        est = {m: estimate(shape_only, m, MAX_LENGTH, 1, LORA_R) for m in ("qlora", "lora")}
        runs = [("7B QLoRA nf4, packed", "qlora", True), ("7B LoRA bf16, packed", "lora", True)]
        if not args.no_unpacked:
            runs.append(("7B LoRA bf16, unpacked", "lora", False))
        dims, max_length, device = QWEN25_7B, MAX_LENGTH, "cuda"
        if args.small_shape:
            dims, max_length, device = SMALL, 256, "cuda" if gpu else "cpu"
            runs = [r for r in runs if r[1] != "qlora" or gpu]
            runs = [(label.replace("7B", "small Qwen2"), m, p) for label, m, p in runs]
        if gpu is None and not args.small_shape:
            skipped += [f"{label} (no GPU)" for label, *_ in runs]
            skipped.append("building the 7B-shaped model (15 GB of weights; no GPU to train it on)")
            for label, method, _ in runs[:2]:
                results.append((label.split(",")[0] + " (estimate only)", {}, est[method]))
        else:
            model = Path(args.dir or cache_root() / "bench") / ("qwen2-small-shape" if args.small_shape
                                                                else "qwen2.5-7b-shape")
            if not (model / "config.json").is_file():
                print(f"building the 7B-shaped model in {model} ...", flush=True)
                part = model.with_name(model.name + ".partial")
                shutil.rmtree(part, ignore_errors=True)
                part.parent.mkdir(parents=True, exist_ok=True)
                proc = subprocess.run([sys.executable, "-c", BUILD, part, tok_dir, json.dumps(dims), device],
                                      capture_output=True, text=True)
                line = [l for l in proc.stdout.splitlines() if l.startswith("BUILT")]
                if proc.returncode != 0 or not line:
                    raise SystemExit(f"building the 7B-shaped model failed:\n{proc.stderr[-3000:]}")
                _, n, secs = line[0].split()
                print(f"  {int(n) / 1e9:.2f} B parameters, built and saved in {float(secs):.0f} s", flush=True)
                os.replace(part, model)
            (ws / "models" / "qwen7b").symlink_to(model.resolve(), target_is_directory=True)
            est = {m: estimate(model, m, max_length, 1, LORA_R) for m in ("qlora", "lora")}
            from transformers import AutoTokenizer

            from train import medqa_like

            records = medqa_like(args.records, AutoTokenizer.from_pretrained(tok_dir))
            (ws / "data" / "medqa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            base = schema_defaults("models/qwen7b")
            for label, method, pack in runs:
                name = f"{method}-{'packed' if pack else 'unpacked'}"
                cfg = write_config(ws, name, base, {
                    "method": method, "data.train": "data/medqa.jsonl", "data.max_length": max_length,
                    "data.pack": pack, "training.batch_size": 1, "training.grad_accum": 1,
                    "training.max_steps": args.steps, "training.gradient_checkpointing": True,
                    "training.precision": "auto", "training.logging_steps": 1, "training.save_steps": 100000,
                    "training.warmup_ratio": 0.0, "lora.r": LORA_R, "lora.alpha": 2 * LORA_R,
                    "lora.dropout": 0.0, "lora.target_modules": "all-linear", "evaluation.prompts": [],
                    "evaluation.eval_loss": False})
                print(f"{label}: tuitune train ...", flush=True)
                results.append((label, train(ws, cfg, name, env, tmp / f"mem-{name}.jsonl", CLOCK_FROM),
                                est[method]))

        # --- the table -----------------------------------------------------------------------
        print(f"\n{'run':34}{'max_alloc GiB':>14}{'estimate GiB':>13}{'alloc/est':>10}{'tokens/s':>10}"
              f"{'wall s':>8}  per-sample attention")
        for label, r, e in results:
            alloc = r.get("max_allocated")
            total = e["total_gib"] * 2**30 if e else None
            ratio = f"{alloc / total:10.2f}" if alloc and total else f"{'':10}"
            tps = f"{r['tokens_per_s']:10.0f}" if r.get("tokens_per_s") else f"{'':10}"
            wall = f"{r['wall']:8.0f}" if "wall" in r else f"{'':8}"
            attn = ("yes" if r["per_sample_attention"] else "no") if r else ""
            print(f"{label:34}{gib(alloc):>14}{gib(total):>13}{ratio}{tps}{wall}  {attn}")
        packed = next((r for l, r, _ in results if l.endswith("LoRA bf16, packed")), None)
        unpacked = next((r for l, r, _ in results if l.endswith("LoRA bf16, unpacked")), None)
        if packed and unpacked and packed.get("tokens_per_s") and unpacked.get("tokens_per_s"):
            mem = (f", peak memory x{packed['max_allocated'] / unpacked['max_allocated']:.2f}"
                   if packed.get("max_allocated") and unpacked.get("max_allocated") else "")
            print(f"packed vs unpacked (LoRA bf16): tokens/s x{packed['tokens_per_s'] / unpacked['tokens_per_s']:.2f}"
                  f"{mem}")
        for m, e in est.items():
            parts = ", ".join(f"{k} {v:.2f}" for k, v in e["parts"].items())
            print(f"estimate {m}: {e['total_gib']:.2f} GiB ({parts})")
        if gpu is None:
            print("tiny-demo ran on the CPU: no CUDA memory to report (max_alloc n/a)")
        for s in skipped:
            print(f"skipped: {s}")
        print(f"total wall: {time.time() - t_start:.0f} s")
    finally:
        if args.keep:
            print(f"work folder kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
