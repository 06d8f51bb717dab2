"""Peak memory above the libraries' import floor and wall time of `tuitune merge` against peft, in one run.

    python bench/merge.py [--layers 22] [--hidden 2048] [--intermediate 5632] [--kv-heads 4] [--vocab 32000]
                          [--shard 500MB] [--rounds N] [--no-real] [--dir DIR]

The bench model is a synthetic Llama of TinyLlama-1.1B's shape (random bf16 weights, untied
head, 2.2 GB in 500 MB safetensors shards, the tiny model's tokenizer), built offline once and
cached under ``~/.cache/tuitune/bench/`` (or ``$TUITUNE_CACHE/bench``), with a LoRA adapter
(r=16 on every linear layer, non-zero B). The real model (SmolLM2-135M-Instruct,
``tuitune.sample.real_model_path()``) is merged too, with a LoRA adapter made by peft on it
(r=16, all linear, B drawn at random so the merge is not a no-op). Each of these runs in a
fresh process:
  - floor: `import torch, transformers, peft` and nothing else,
  - peft: `AutoModelForCausalLM.from_pretrained` + `PeftModel.from_pretrained` +
    `merge_and_unload()` + `save_pretrained(max_shard_size=...)`,
  - `tuitune merge ADAPTER -o OUT --no-verify` (the streaming merge alone),
  - `tuitune merge ADAPTER -o OUT` (merge + the built-in logits verification, the default),
and reports each one's peak RSS (VmHWM), that peak above the floor, wall time (process start to
end, imports included), and the ratios to peft's. Goals (issue 11, item 7), on the bench model
of at least 2 GB, with verification: peak RSS above the floor <= 0.4x peft's, wall <= 1.2x.
Validate quickly with e.g. ``--layers 2 --hidden 256 --intermediate 704 --vocab 16000 --shard 5MB``.
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
    if kind == "floor":
        import torch, transformers, peft  # noqa: F401, E401
    elif kind == "baseline":
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


def cache_dir() -> Path:
    from tuitune.sample import cache_root

    return cache_root() / "bench"


def build(root: Path, layers: int, hidden: int, shard_mb: int, vocab: int = 32000, inter: int | None = None,
          kv_heads: int | None = None) -> tuple[Path, Path]:
    """The synthetic base and its adapter in ``root`` (made once: a finished ``root`` is reused)."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file

    from tuitune.sample import tiny_model_path

    base, adapter = root / "base", root / "adapter"
    if (root / "complete").is_file():
        return base, adapter
    shutil.rmtree(root, ignore_errors=True)
    base.mkdir(parents=True)
    inter, heads = inter or int(hidden * 2.75), hidden // 64
    kv_heads = kv_heads or heads
    kv = kv_heads * 64
    cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=hidden, intermediate_size=inter,
               num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
               max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False, dtype="bfloat16",
               bos_token_id=0, eos_token_id=2, pad_token_id=0, hidden_act="silu")
    (base / "config.json").write_text(json.dumps(cfg, indent=2))
    tiny = tiny_model_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (tiny / name).exists():
            shutil.copy(tiny / name, base / name)
    gen = torch.Generator().manual_seed(0)
    shapes: list[tuple[str, tuple]] = [("model.embed_tokens.weight", (vocab, hidden))]
    linear = {"q_proj": (hidden, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden),
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
    (root / "complete").write_text("")
    return base, adapter


def real_adapter(root: Path) -> tuple[Path, Path]:
    """SmolLM2-135M-Instruct and a peft LoRA adapter on it (r=16, all linear, random non-zero B)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuitune.sample import real_model_path

    base = real_model_path()
    adapter = root / "real-adapter"
    if (adapter / "adapter_model.safetensors").is_file():
        return base, adapter
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32,
                                             target_modules="all-linear", lora_dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)  # peft starts B at zero: the merge would change nothing
    tmp = root / ".real-adapter.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tmp.rename(adapter)
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
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=5632)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--shard", default="500MB", help="shard size of the synthetic base and of the outputs")
    ap.add_argument("--dir", help="work folder for the outputs (default: a temporary one, removed after)")
    ap.add_argument("--rounds", type=int, default=1, help="repeat and keep each one's best (default 1)")
    ap.add_argument("--no-real", action="store_true", help="skip the real model (SmolLM2-135M-Instruct)")
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="tuitune-bench-merge-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        shard_mb = int(args.shard.upper().rstrip("MB"))
        key = (f"llama-{args.layers}x{args.hidden}-i{args.intermediate}-kv{args.kv_heads}-v{args.vocab}"
               f"-s{shard_mb}")
        base, adapter = build(cache_dir() / key, args.layers, args.hidden, shard_mb, args.vocab,
                              args.intermediate, args.kv_heads)
        size = sum(p.stat().st_size for p in base.glob("*.safetensors"))
        n = len(list(base.glob("*.safetensors")))
        print(f"synthetic base: {size / 1e9:.2f} GB bf16 in {n} shards ({base}); adapter "
              f"{(adapter / 'adapter_model.safetensors').stat().st_size / 1e6:.1f} MB (r=16, all linear)")
        models = [("synthetic", base, adapter, size)]
        if not args.no_real:
            rbase, radapter = real_adapter(cache_dir())
            rsize = sum(p.stat().st_size for p in rbase.glob("*.safetensors"))
            print(f"real base: SmolLM2-135M-Instruct, {rsize / 1e6:.0f} MB ({rbase}); adapter {radapter}")
            models.append(("real", rbase, radapter, rsize))
        kinds = ("floor", "baseline", "tuitune-noverify", "tuitune")
        best: dict[tuple[str, str], tuple[float, float]] = {}
        for _ in range(args.rounds):
            for label, b, a, _size in models:
                for kind in kinds:
                    rss, wall = measure(kind, b, a, root / f"out-{label}-{kind}", args.shard)
                    old = best.get((label, kind))
                    best[label, kind] = (min(rss, old[0]), min(wall, old[1])) if old else (rss, wall)
        floor = min(best[label, "floor"][0] for label, *_ in models)  # the same imports for every model
        labels = {"baseline": "peft merge_and_unload + save", "tuitune-noverify": "tuitune merge --no-verify",
                  "tuitune": "tuitune merge (verified, default)"}
        print(f"\nimport floor (import torch, transformers, peft): {floor:.0f} MB peak RSS")

        def above(rss: float) -> float:
            # 0 for a run that stays below the floor: it never imported all three libraries.
            return max(0.0, rss - floor)

        for label, b, a, size in models:
            b_rss, b_wall = best[label, "baseline"]
            b_above = above(b_rss)
            print(f"\n{label} model ({size / 1e9:.2f} GB)")
            print(f"{'':36s}{'peak RSS':>10s}{'above floor':>13s}{'wall':>8s}{'RSS x':>8s}{'wall x':>8s}")
            for kind in kinds[1:]:
                rss, wall = best[label, kind]
                print(f"{labels[kind]:36s}{rss:8.0f}MB{above(rss):11.0f}MB{wall:7.1f}s"
                      f"{above(rss) / b_above:8.2f}{wall / b_wall:8.2f}")
            goal = "the goal" if size >= 2e9 else "for information (the goal is on a model of at least 2 GB)"
            for kind in ("tuitune", "tuitune-noverify"):
                rss, wall = best[label, kind]
                rx, wx = above(rss) / b_above, wall / b_wall
                print(f"{labels[kind]}, {goal}: RSS above the floor <= 0.4x peft's: {rx:.2f}x "
                      f"{'PASS' if rx <= 0.4 else 'FAIL'}; wall <= 1.2x: {wx:.2f}x {'PASS' if wx <= 1.2 else 'FAIL'}")
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
