"""``tuitune env``: environment diagnosis, and ``--estimate`` for a VRAM go/no-go.

Layer twin: ``screens/env.py`` is the same step's screen (one name, two layers).
"""

from __future__ import annotations

import argparse
import json

METHODS = ("full", "lora", "qlora")
DEEPSPEED = ("none", "zero2", "zero3", "zero2_offload", "zero3_offload")
KERNELS = ("auto", "liger", "none")


def register(sub) -> None:
    p = sub.add_parser(
        "env", help="diagnose CUDA, GPUs, packages, disk; estimate VRAM for a model",
        description="Check this machine for fine-tuning and say what to fix. With --estimate, "
        "estimate the GPU memory a model needs with the given settings (reads only config.json).")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--estimate", metavar="MODEL_DIR_OR_HUB_ID", help="model folder (with config.json; relative to here, else to "
                   "the workspace), a run id (its base model), or a hub id such as internlm/internlm2_5-7b-chat "
                   "(its config.json from the local hub cache, else the hub, asked once), to estimate VRAM for")
    p.add_argument("--method", choices=METHODS, default="lora", help="fine-tuning method (default: lora)")
    p.add_argument("--max-length", type=int, default=2048, metavar="N", help="tokens per sample (default: 2048)")
    p.add_argument("--batch-size", type=int, default=1, metavar="N", help="samples per GPU per step (default: 1)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True,
                   help="recompute activations in the backward pass (default: on)")
    p.add_argument("--lora-r", type=int, default=64, metavar="R", help="LoRA rank (default: 64)")
    p.add_argument("--gpus", type=int, default=1, metavar="N", help="GPUs to spread the job over (default: 1)")
    p.add_argument("--deepspeed", choices=DEEPSPEED, default="none", help="DeepSpeed ZeRO stage (default: none)")
    p.add_argument("--kernels", choices=KERNELS, default="auto",
                   help="the run's training.kernels: auto or liger compute the loss without the (tokens x vocabulary) "
                   "logits, none holds them (default: auto)")
    p.set_defaults(func=run)


def _positive(name: str, value: int) -> None:
    from tuitune.errors import TuituneError

    if value <= 0:
        raise TuituneError(f"--{name} must be a positive whole number, got {value}")


def run(args) -> int:
    if args.estimate:
        return run_estimate(args)
    from tuitune.doctor import run_checks

    report = run_checks(args.workspace)
    if args.json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return 0
    from rich.console import Console

    from tuitune.render import checks_table

    console = Console()
    console.print(checks_table(report.checks))
    fails = sum(c.status == "fail" for c in report.checks)
    warns = sum(c.status == "warn" for c in report.checks)
    console.print(f"{fails} to fix, {warns} to look at, "
                  f"{len(report.checks) - fails - warns} ok", highlight=False)
    return 0


def run_estimate(args) -> int:
    from tuitune.doctor import gpu_inventory
    from tuitune.vram import advise, estimate_model_dir

    for name in ("max-length", "batch-size", "lora-r", "gpus"):
        _positive(name, getattr(args, name.replace("-", "_")))
    est = estimate_model_dir(
        args.estimate, workspace=args.workspace, method=args.method, max_length=args.max_length, batch_size=args.batch_size,
        gradient_checkpointing=args.gradient_checkpointing, lora_r=args.lora_r, gpus=args.gpus,
        deepspeed=None if args.deepspeed == "none" else args.deepspeed, chunked_loss=args.kernels != "none",
    )
    gpus = gpu_inventory(use_torch=False)
    advice = advise(est, [g.free_gib for g in gpus])
    if args.json:
        print(json.dumps({**est.to_dict(), "advice": advice.to_dict(),
                          "gpus": [g.to_dict() for g in gpus]}, ensure_ascii=False, indent=2))
        return 0
    from rich.console import Console

    from tuitune.render import estimate_settings, estimate_table

    console = Console()
    console.print(estimate_settings(est), highlight=False)
    console.print(estimate_table(est))
    console.print(advice.message, highlight=False)
    for s in advice.suggestions:
        console.print(f"  - {s}", highlight=False)
    return 0
