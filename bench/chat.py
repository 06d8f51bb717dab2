"""Bench: the chat engine's tokens/s and time to first token next to plain ``model.generate``.

    python bench/chat.py [--rounds 5] [--max-new-tokens 128] [--threads 1] [--model DIR]

Same process, same model (the tiny Qwen2 by default), same prompts, greedy, each
prompt alternating which side goes first, after a warm-up:

  engine     ChatSession.stream(prompt): template render + tokenize, a generation thread,
             a queue streamer, incremental detokenizing and stop-word filtering;
             ttft = request → first new token, tokens/s = new tokens / whole answer time
  generate   model.generate(input_ids, generation_config=the same) on pre-tokenized ids;
             ttft = the time of the same call with max_new_tokens=1

Goals: engine tokens/s at least 0.95x generate's; first token within 50 ms of generate's.
Figures are medians over rounds x prompts; the ratio and the gap are medians of
back-to-back pairs, so a shared machine's drifting load cancels out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = ["请介绍一下你自己", "你是谁", "What is LoRA?", "How do I fine-tune a model?",
           "这个药有什么副作用", "Please introduce yourself."]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps a shared box quieter)")
    ap.add_argument("--model", default=None, help="model folder (default: the tiny model)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from tuitune.chat import ChatSession, GenerationSettings
    from tuitune.generation import generation_config, stop_tokens
    from tuitune.sample import tiny_model_path
    from tuitune.templates import encode_prompt, stop_words

    torch.set_num_threads(args.threads)
    model_dir = args.model or str(tiny_model_path())
    settings = GenerationSettings(temperature=0, max_new_tokens=args.max_new_tokens, seed=0)
    t0 = time.perf_counter()
    session = ChatSession(settings).load(model_dir)
    load_s = time.perf_counter() - t0
    model, tok = session.loaded.model, session.tokenizer
    eos_ids, _ = stop_tokens(model, tok, stop_words(tok, session.template))
    gen_cfg = generation_config(model, tok, settings, args.max_new_tokens, eos_ids)
    one_cfg = generation_config(model, tok, settings, 1, eos_ids)
    encoded = {p: torch.tensor([encode_prompt(tok, session.template, [{"role": "user", "content": p}])])
               for p in PROMPTS}

    def plain(prompt: str, cfg) -> tuple[int, float]:
        ids = encoded[prompt]
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
        return int(out.shape[1] - ids.shape[1]), time.perf_counter() - t

    def engine(prompt: str):
        session.reset()
        text = "".join(session.stream(prompt))
        return session.last.stats, text

    # Warm-up, and a check that both sides produce the same tokens.
    for p in PROMPTS[:2]:
        st, text = engine(p)
        n, _ = plain(p, gen_cfg)
        plain(p, one_cfg)
        assert n == st.new_tokens, (n, st.new_tokens)

    eng_tps, eng_ttft, gen_tps, gen_ttft = [], [], [], []
    for r in range(args.rounds):
        for i, p in enumerate(PROMPTS):
            order = ("e", "g") if (r + i) % 2 == 0 else ("g", "e")
            for side in order:
                if side == "e":
                    st, _ = engine(p)
                    eng_tps.append(st.tokens_per_s)
                    eng_ttft.append(st.ttft)
                else:
                    n, dt = plain(p, gen_cfg)
                    gen_tps.append(n / dt)
                    _, dt1 = plain(p, one_cfg)
                    gen_ttft.append(dt1)

    med = statistics.median
    res = {
        "model": Path(model_dir).name, "load_s": round(load_s, 2), "threads": args.threads,
        "max_new_tokens": args.max_new_tokens, "samples": len(eng_tps),
        "engine_tokens_per_s": round(med(eng_tps), 1), "generate_tokens_per_s": round(med(gen_tps), 1),
        # Pairwise (same prompt, back to back), so a shared box's drifting load cancels out.
        "ratio": round(med([e / g for e, g in zip(eng_tps, gen_tps)]), 3),
        "engine_ttft_ms": round(med(eng_ttft) * 1000, 1), "generate_ttft_ms": round(med(gen_ttft) * 1000, 1),
        "ttft_gap_ms": round(med([e - g for e, g in zip(eng_ttft, gen_ttft)]) * 1000, 1),
    }
    res["goals_met"] = res["ratio"] >= 0.95 and res["ttft_gap_ms"] <= 50
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"model {res['model']} ({args.threads} thread(s)), {res['samples']} answers of "
          f"{args.max_new_tokens} tokens a side, load {res['load_s']} s")
    print(f"{'':10}{'tokens/s':>10}{'first token':>14}")
    print(f"{'engine':10}{res['engine_tokens_per_s']:>10}{res['engine_ttft_ms']:>11} ms")
    print(f"{'generate':10}{res['generate_tokens_per_s']:>10}{res['generate_ttft_ms']:>11} ms")
    print(f"engine/generate tokens/s {res['ratio']:.3f} (goal >= 0.95); first token "
          f"{res['ttft_gap_ms']:+.1f} ms (goal <= +50 ms): {'met' if res['goals_met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
