"""Peak memory and wall time of `tuitune merge` against peft's merge_and_unload, in one run.

    python bench/merge.py [--layers 24] [--hidden 1024] [--vocab 16000] [--shard 40MB] [--rounds N] [--dir DIR]

Writes a synthetic Llama-style model (random bf16 weights, untied head, a few hundred
MB in 8+ safetensors shards, the tiny model's tokenizer) and a LoRA adapter (r=16 on
every linear layer, non-zero B), then runs, each in a fresh process:
  - baseline: `AutoModelForCausalLM.from_pretrained` + `PeftModel.from_pretrained` +
    `merge_and_unload()` + `save_pretrained(max_shard_size=...)`,
  - `tuitune merge ADAPTER -o OUT --no-verify` (the streaming merge alone),
  - `tuitune merge ADAPTER -o OUT` (merge + the built-in logits verification),
and reports each one's peak RSS (VmHWM) and wall time (process start to end, imports
included), and the ratios to the baseline. Goals for the merge: peak RSS <= 0.4x and
wall time <= 1.2x the baseline's. Verification streams both models from disk, so its
memory is the imports of transformers + peft (~440 MB here, whatever the model's size)
plus about one module's weights; on a model of a few hundred MB that fixed cost alone
is near 0.4x of the baseline, on a 7B model it is a small fraction.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MEASURE = textwrap.dedent(r'''
    import sys, time
    t0 = time.monotonic()
    kind, base, adapter, out, shard = sys.argv[1:6]
    if kind == "baseline":
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
        m = PeftModel.from_pretrained(m, adapter).merge_and_unload()
        m.save_pretrained(out, max_shard_size=shard)
    else:
        from tuitune.cli import main
        args = ["merge", adapter, "-o", out, "--max-shard-size", shard]
        if kind == "tuitune-noverify":
            args.append("--no-verify")
        assert main(args) == 0
    wall = time.monotonic() - t0
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print("RESULT", hwm / 1024, wall)
''')


def build(root: Path, layers: int, hidden: int, shard_mb: int, vocab: int = 16000) -> tuple[Path, Path]:
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    from tuitune.sample import tiny_model_path

    base, adapter = root / "base", root / "adapter"
    base.mkdir(parents=True)
    inter, heads = int(hidden * 2.75), hidden // 64
    cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=hidden, intermediate_size=inter,
               num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads, vocab_size=vocab,
               max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False, dtype="bfloat16",
               bos_token_id=0, eos_token_id=2, pad_token_id=0, hidden_act="silu")
    (base / "config.json").write_text(json.dumps(cfg, indent=2))
    tiny = tiny_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (tiny / name).exists():
            shutil.copy(tiny / name, base / name)
    gen = torch.Generator().manual_seed(0)
    shapes: list[tuple[str, tuple]] = [("model.embed_tokens.weight", (vocab, hidden))]
    linear = {"q_proj": (hidden, hidden), "k_proj": (hidden, hidden), "v_proj": (hidden, hidden),
              "o_proj": (hidden, hidden), "gate_proj": (inter, hidden), "up_proj": (inter, hidden),
              "down_proj": (hidden, inter)}
    for i in range(layers):
        for name, shape in linear.items():
            part = "self_attn" if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            shapes.append((f"model.layers.{i}.{part}.{name}.weight", shape))
        shapes += [(f"model.layers.{i}.input_layernorm.weight", (hidden,)),
                   (f"model.layers.{i}.post_attention_layernorm.weight", (hidden,))]
    shapes += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    groups, size = [[]], 0
    for key, shape in shapes:
        n = 2 * torch.Size(shape).numel()
        if groups[-1] and size + n > shard_mb * 1_000_000:
            groups.append([])
            size = 0
        groups[-1].append((key, shape))
        size += n
    weight_map, total = {}, 0
    for i, group in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for key, shape in group:
            t = torch.ones(shape) if len(shape) == 1 else torch.randn(shape, generator=gen) * 0.02
            tensors[key] = t.to(torch.bfloat16)
            weight_map[key] = name
            total += 2 * t.numel()
        save_file(tensors, str(base / name), metadata={"format": "pt"})
        del tensors
    (base / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                   "weight_map": weight_map}))
    r = 16
    lcfg = LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=32, target_modules=list(linear),
                      base_model_name_or_path=str(base))
    adapter.mkdir()
    lcfg.save_pretrained(str(adapter))
    ad = {}
    for i in range(layers):
        for name, (out_f, in_f) in linear.items():
            part = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            pre = f"base_model.model.model.layers.{i}.{part}.{name}"
            ad[f"{pre}.lora_A.weight"] = torch.randn((r, in_f), generator=gen) * 0.01
            ad[f"{pre}.lora_B.weight"] = torch.randn((out_f, r), generator=gen) * 0.01
    save_file(ad, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    return base, adapter


def measure(kind: str, base: Path, adapter: Path, out: Path, shard: str) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-c", MEASURE, kind, str(base), str(adapter), str(out), shard],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    if kind == "tuitune":
        print("   ", next((l for l in proc.stdout.splitlines() if "verification" in l), "").strip())
    _, rss, wall = line.split()
    shutil.rmtree(out, ignore_errors=True)
    return float(rss), float(wall)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--vocab", type=int, default=16000)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--shard", default="40MB", help="shard size of the synthetic base and of the outputs")
    ap.add_argument("--dir", help="work folder (default: a temporary one, removed after)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat and keep each one's best (default 1)")
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="tuitune-bench-merge-"))
    try:
        shard_mb = int(args.shard.upper().rstrip("MB"))
        base, adapter = build(root, args.layers, args.hidden, shard_mb, args.vocab)
        size = sum(p.stat().st_size for p in base.glob("*.safetensors"))
        n = len(list(base.glob("*.safetensors")))
        print(f"synthetic base: {size / 1e6:.0f} MB bf16 in {n} shards; adapter "
              f"{(adapter / 'adapter_model.safetensors').stat().st_size / 1e6:.1f} MB (r=16, all linear)")
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.rounds):
            for kind in ("baseline", "tuitune-noverify", "tuitune"):
                rss, wall = measure(kind, base, adapter, root / f"out-{kind}", args.shard)
                old = best.get(kind)
                best[kind] = (min(rss, old[0]), min(wall, old[1])) if old else (rss, wall)
        b_rss, b_wall = best["baseline"]
        print(f"{'':34s}{'peak RSS':>12s}{'wall':>10s}{'RSS x':>8s}{'wall x':>8s}")
        labels = {"baseline": "peft merge_and_unload + save", "tuitune-noverify": "tuitune merge --no-verify",
                  "tuitune": "tuitune merge (with verification)"}
        for kind, (rss, wall) in best.items():
            print(f"{labels[kind]:34s}{rss:10.0f}MB{wall:9.1f}s{rss / b_rss:8.2f}{wall / b_wall:8.2f}")
        for kind in ("tuitune-noverify", "tuitune"):
            rss, wall = best[kind]
            print(f"goal ({labels[kind]}): RSS <= 0.4x: {'met' if rss / b_rss <= 0.4 else 'NOT met'}; "
                  f"wall <= 1.2x: {'met' if wall / b_wall <= 1.2 else 'NOT met'}")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
