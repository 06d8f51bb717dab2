"""Bench: evaluation's batched answers and held-out loss next to the one-at-a-time and plain baselines.

    python bench/eval.py [--model real|tiny|DIR] [--records 24] [--batch-size 8] [--max-new-tokens 48]

Same process, same model, same records (the MedQA sample, converted), greedy:

  answers   generation.answer_batch (left-padded batches of --batch-size) against the same
            prompts answered one at a time through generation.Generation (chat's path):
            the answers must be equal; goal >= 3x the generated tokens/s at batch 8 on the real model.
  loss      eval.loss.record_losses (per-record sums, token-budget batches) against a plain
            ``model(input_ids, attention_mask, labels)`` loop over the same batches:
            goal >= 0.9x the tokens/s.

Each pair runs back to back, alternating which side goes first, after a warm-up; the
figures are medians over --rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _records(n: int) -> list[dict]:
    from tuitune.data import load_records
    from tuitune.data.convert import convert

    out = Path(tempfile.mkdtemp()) / "medqa.jsonl"
    convert(ROOT / "sample_data" / "medqa_sample.xlsx", out, preset="medqa")
    recs = load_records(out)
    return (recs * (n // len(recs) + 1))[:n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="real", help="real (SmolLM2-135M-Instruct), tiny, or a model folder")
    ap.add_argument("--records", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from tuitune.loading import load_model, load_tokenizer
    from tuitune.eval.loss import batches, encode_records, record_losses
    from tuitune.eval.run import prompt_of
    from tuitune.generation import Generation, GenerationSettings, answer_batch
    from tuitune.sample import real_model_path, tiny_model_path

    model_dir = {"real": lambda: real_model_path(), "tiny": lambda: tiny_model_path()}.get(
        args.model, lambda: Path(args.model))()
    lm = load_model(str(model_dir), {})
    model, tok = lm.model, load_tokenizer(str(model_dir), False)
    records = _records(args.records)
    prompts = [prompt_of(r)[0] for r in records]
    settings = GenerationSettings(temperature=0, max_new_tokens=args.max_new_tokens)

    def batched():
        t = time.perf_counter()
        out = answer_batch(model, tok, settings, conversations=prompts, batch_size=args.batch_size)
        return out, time.perf_counter() - t

    def single():
        t = time.perf_counter()
        out = []
        for msgs in prompts:
            g = Generation(model, tok, settings, messages=msgs)
            for _ in g:
                pass
            out.append((g.text, g.stats.new_tokens))
        return out, time.perf_counter() - t

    encoded = encode_records(tok, records, template="auto", system=None, max_length=512, task="sft")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    tokens = sum(len(e["input_ids"]) for e in encoded)

    def ours_loss():
        t = time.perf_counter()
        record_losses(model, encoded, pad_id=pad)
        return time.perf_counter() - t

    def plain_loss():
        """The same batches (same order, same budget) through the model's own loss."""
        t = time.perf_counter()
        for _idx, ids, labels, mask in batches(encoded, pad):
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        return time.perf_counter() - t

    # Warm-up and the equality check: greedy batched answers are the one-at-a-time answers.
    b, _ = batched()
    s, _ = single()
    same = sum(x.text == y[0] for x, y in zip(b, s))
    ours_loss(), plain_loss()
    gen_ratio, loss_ratio, rows = [], [], []
    for r in range(args.rounds):
        pair = [batched, single] if r % 2 == 0 else [single, batched]
        res = {f.__name__: f() for f in pair}
        (bo, bt), (so, st) = res["batched"], res["single"]
        btps, stps = sum(a.new_tokens for a in bo) / bt, sum(n for _, n in so) / st
        lo = [ours_loss, plain_loss] if r % 2 == 0 else [plain_loss, ours_loss]
        lres = {f.__name__: f() for f in lo}
        otps, ptps = tokens / lres["ours_loss"], tokens / lres["plain_loss"]
        gen_ratio.append(btps / stps)
        loss_ratio.append(otps / ptps)
        rows.append({"batched_tok_s": btps, "single_tok_s": stps, "ours_loss_tok_s": otps, "plain_loss_tok_s": ptps})
    summary = {"model": str(model_dir), "records": len(records), "batch_size": args.batch_size,
               "same_answers": f"{same}/{len(records)}",
               "answers_ratio": statistics.median(gen_ratio), "loss_ratio": statistics.median(loss_ratio),
               "rounds": rows}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"model {model_dir.name}, {len(records)} records, batch {args.batch_size}, greedy, "
              f"max_new_tokens {args.max_new_tokens}")
        print(f"answers: batched {med['batched_tok_s']:.1f} tok/s vs one at a time {med['single_tok_s']:.1f}: "
              f"{summary['answers_ratio']:.2f}x (goal >= 3x); same answers {same}/{len(records)}")
        print(f"loss:    ours {med['ours_loss_tok_s']:.0f} tok/s vs plain model(**batch) {med['plain_loss_tok_s']:.0f}: "
              f"{summary['loss_ratio']:.2f}x (goal >= 0.9x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
