"""GRPO learns what it is rewarded for (#24 section 3), resumes after kill -9 where it stopped (section 4),
and a reward that raises ends the run `failed`, saying where, its checkpoint kept (section 2).

The learning outcomes are measured as a user measures them: `tuitune train` trains, Evaluate
(:func:`tuitune.eval.run.evaluate`) answers held-out prompts with the base (the adapter off) and the tuned
model, and scores them with the run's own rewards. Fixed seed, fp32.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import ROOT, assert_one_line_error, run_cli
from train_helpers import events, kill_group, make_workspace, state, wait_until, write_config

#: The token the tiny model is paid to say. The tiny model is random (tuitune.sample): every token is
#: about as likely as any other, so "Linus" is in a few percent of its 32-token answers.
TOKEN = "Linus"
TINY_GRPO = {"task": "grpo", "data.train": "data/prompts.jsonl", "data.pack": False, "data.max_length": 128,
             "evaluation.prompts": [], "training.logging_steps": 1, "training.save_total_limit": None,
             "training.warmup_ratio": 0.0}


def _jsonl(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    return path


def _evaluate(ws: Path, run: str, data: str, settings) -> tuple[dict, dict]:
    """Evaluate's summary of the base (adapter off) and the tuned model on held-out prompts, in fp32."""
    from tuitune.eval.run import evaluate, plan

    _, report = evaluate(plan(run, ws, data=ws / data), ws / "evals" / run, settings=settings, dtype="fp32",
                         batch_size=64)
    return report["summary"]["baseline"], report["summary"]["target"]


@pytest.fixture
def ws(tmp_path, tiny_model) -> Path:
    """The tiny model's workspace with prompt records: 128 to train on, 64 held out (other numbers)."""
    ws = make_workspace(tmp_path / "ws", tiny_model)
    _jsonl(ws / "data" / "prompts.jsonl", [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)}
                                           for i in range(128)])
    _jsonl(ws / "data" / "held.jsonl", [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)}
                                        for i in range(500, 564)])
    return ws


# --- the tiny model learns a rewarded token (fast suite) -------------------------------------------

def test_the_tiny_model_learns_to_say_the_rewarded_token(ws):
    """A reward that pays for one token: the share of held-out answers that hold it rises from a few
    percent (the base, adapter off) to most of them in a few steps. Sampled as training samples (T 1, no
    top-k or top-p), seeded."""
    from tuitune.generation import GenerationSettings

    cfg = write_config(ws, "token", **TINY_GRPO, **{
        "training.max_steps": 6, "training.batch_size": 128, "training.lr": 0.03, "training.save_steps": 6,
        "grpo.num_generations": 16, "grpo.max_completion_length": 32, "grpo.temperature": 1.0,
        "grpo.rewards": [{"name": "contains", "text": TOKEN}]})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "token", timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rewards = [e["reward_contains_mean"] for e in events(ws / "runs" / "token", "train")]
    sampled = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, seed=0, max_new_tokens=32)
    base, tuned = _evaluate(ws, "token", "data/held.jsonl", sampled)
    print(f"\nheld-out answers holding {TOKEN!r}: base {base['reward_contains']:.1%}, tuned "
          f"{tuned['reward_contains']:.1%}; training reward by step {[round(r, 2) for r in rewards]}")
    assert 0 < base["reward_contains"] <= 0.2, "the tiny model changed: reward a token its base says sometimes"
    assert tuned["reward_contains"] >= 0.6 and rewards[-1] > rewards[0] + 0.5


# --- a reward that raises during training ----------------------------------------------------------

#: The user's reward: fine while the config check tries it (no trainer state) and for two steps, then it raises.
FLAKY_PY = """\
def judge(completions, trainer_state=None, **kwargs):
    if trainer_state is not None and trainer_state.global_step >= 2:
        raise ConnectionError("the judge at 10.0.0.7 did not answer\\nretry 1 of 3 ...")
    return [float(len(c) % 2) for c in completions]
"""


def test_a_reward_that_raises_fails_the_run_saying_where_and_keeps_the_checkpoint(ws):
    (ws / "flaky.py").write_text(FLAKY_PY, encoding="utf-8")
    cfg = write_config(ws, "flaky", **TINY_GRPO, **{
        "training.max_steps": 6, "training.batch_size": 8, "training.save_steps": 1,
        "grpo.num_generations": 2, "grpo.max_completion_length": 6, "grpo.rewards": ["flaky.py:judge"]})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "flaky", timeout=600)
    run = ws / "runs" / "flaky"
    st = state(run)
    assert st["status"] == "failed", st
    # The function, the records of the batch it was given (file and lines: 4 prompts, 2 completions each)
    # and the exception's first line; no traceback's rest.
    line = st["error"]
    assert re.match(r"reward flaky\.py:judge failed on prompts\.jsonl lines \d+, \d+, \d+, \d+ \(one batch\): ", line), line
    assert line.endswith("ConnectionError: the judge at 10.0.0.7 did not answer") and "retry" not in line, line
    assert_one_line_error(proc, f"run flaky failed: {line}")
    failed = [e for e in events(run, "lifecycle") if e.get("event") == "failed"]
    assert [e["error"] for e in failed] == [line]
    # The steps before it are kept: the last checkpoint is whole, and `runs resume` would start from it.
    assert [e["step"] for e in events(run, "train")] == [1, 2]
    assert (run / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    assert (run / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    listed = json.loads(run_cli("-w", ws, "runs", "list", "--json").stdout)
    assert next(r for r in listed if r["id"] == "flaky")["status"] == "failed"


# --- kill -9, then `runs resume` -------------------------------------------------------------------

@pytest.mark.slow
def test_kill9_then_resume_ends_where_an_uninterrupted_grpo_run_ends(ws):
    # Rewards that some of the tiny model's answers earn and others not, so every step learns something.
    rewards = ["regex pattern='[0-9]{3}'", "regex pattern='^ ' weight=0.5"]
    cfg = write_config(ws, "g", **TINY_GRPO, **{
        "training.max_steps": 20, "training.batch_size": 8, "training.save_steps": 4, "training.lr": 0.005,
        "grpo.num_generations": 2, "grpo.max_completion_length": 8, "grpo.rewards": rewards})
    # One thread in both runs: a sampled completion may flip on a last-bit difference in the logits, and
    # torch's sums differ in their last bits between thread counts (which the worker picks from what
    # else runs on the machine).
    one = {"OMP_NUM_THREADS": "1"}
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "straight", timeout=600, env=one)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    straight = {e["step"]: e for e in events(ws / "runs" / "straight", "train")}

    assert run_cli("-w", ws, "train", cfg, "--name", "killed", env=one).returncode == 0
    run = ws / "runs" / "killed"
    wait_until(lambda: (run / "checkpoints" / "checkpoint-4" / "trainer_state.json").is_file(), what="checkpoint-4")
    kill_group(state(run)["pgid"])
    assert state(run)["status"] != "finished", "the run finished before the kill landed"
    proc = run_cli("-w", ws, "runs", "resume", "killed", "--foreground", timeout=600, env=one)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    st = state(run)
    assert st["status"] == "finished" and st["step"] == 20
    [resume] = [e for e in events(run, "lifecycle") if e.get("event") == "resume"]
    start = int(Path(resume["checkpoint"]).name.rsplit("-", 1)[1])
    assert start in (4, 8, 12, 16)
    after = [e["step"] for e in events(run)[events(run).index(resume):] if e["type"] == "train"]
    assert after == list(range(start + 1, 21))   # it went on from the checkpoint, not from the start
    resumed = {}
    for e in events(run, "train"):
        resumed[e["step"]] = e  # the resumed run's values win for repeated steps
    assert sorted(resumed) == sorted(straight) == list(range(1, 21))
    # The checkpoint holds the weights, the optimizer and the RNG that samples the completions: the
    # resumed steps sample the same completions (the same rewards) and take the same gradients. (GRPO's
    # loss is no test of that: with one update per generation the policy ratio is 1, and the loss is
    # the mean advantage, about 0 at every step.)
    for step in range(start + 1, 21):
        a, b = straight[step], resumed[step]
        assert b["reward_mean"] == pytest.approx(a["reward_mean"], abs=1e-6), step
        assert b["reward_regex_2_mean"] == pytest.approx(a["reward_regex_2_mean"], abs=1e-6), step
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4, abs=1e-7), step
    assert len({straight[s]["reward_mean"] for s in straight}) > 1 and any(straight[s]["grad_norm"] for s in straight)
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "checkpoints" / "checkpoint-20" / "trainer_state.json").is_file()


# --- the real model learns a format (the `real` group) ---------------------------------------------

#: sample_data/real/arithmetic_prompts.jsonl's worked example before each question is another kind of
#: question answered in the format ("capital of France ... #### Paris"). With an arithmetic example SmolLM2
#: copied the format for nearly every sum, greedy: nothing left to learn; with none it never ends so,
#: sampled or not, and GRPO has nothing to learn from. This one leaves it at about a fifth, greedy, and
#: two fifths sampled.
FORMAT = r"####\s*-?\d+\s*$"


@pytest.mark.slow
@pytest.mark.xdist_group("real")
def test_grpo_teaches_the_real_model_the_answer_format(real_model, tmp_path):
    """smol-grpo's recipe with its format reward alone, one step: the held-out format rate (greedy, as
    Evaluate answers) at least doubles and rises by 30 points or more."""
    import time

    from tuitune.config import get_preset, save_config
    from tuitune.config.schema_grpo import RewardSpec
    from tuitune.generation import GenerationSettings
    from tuitune.workspace import Workspace

    ws = Workspace.at(tmp_path / "ws").ensure().root
    records = [json.loads(line) for line in (ROOT / "sample_data" / "real" / "arithmetic_prompts.jsonl").open()]
    _jsonl(ws / "data" / "train.jsonl", records[:64])
    _jsonl(ws / "data" / "held.jsonl", records[64:])   # 16: Evaluate's answers cost as much as the step
    cfg = get_preset("smol-grpo").model_copy(update={"model": str(real_model)})
    cfg.data.train = "data/train.jsonl"
    cfg.training.precision, cfg.training.max_steps, cfg.training.lr = "fp32", 1, 5e-4
    cfg.grpo.rewards = [RewardSpec(name="regex", pattern=FORMAT)]
    cfg.evaluation.prompts = []
    save_config(cfg, ws / "configs" / "format.yaml")
    t0 = time.monotonic()
    proc = run_cli("-w", ws, "train", ws / "configs" / "format.yaml", "--foreground", "--name", "format",
                   timeout=900)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    [step] = events(ws / "runs" / "format", "train")
    greedy = GenerationSettings(temperature=0, max_new_tokens=cfg.grpo.max_completion_length)
    base, tuned = _evaluate(ws, "format", "data/held.jsonl", greedy)
    print(f"\nheld-out format rate (#### <number> at the end, greedy, {len(records) - 64} prompts): base "
          f"{base['format_rate']:.1%}, tuned {tuned['format_rate']:.1%}; the run took {took:.0f} s "
          f"(training reward {step['reward_mean']:.2f})")
    assert tuned["format_rate"] >= 2 * base["format_rate"] and tuned["format_rate"] >= base["format_rate"] + 0.3
