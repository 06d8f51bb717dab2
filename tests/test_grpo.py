"""GRPO (task grpo, #24): the config and its checks, the rewards, prompt records and their converters,
and a real run of the tiny model through `tuitune train` in a demo workspace."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from train_helpers import events, kill_group, state, wait_until

PROMPTS = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(16)]
GRPO_YAML = """\
model: models/tiny-chat
task: grpo
method: lora
data: {{train: data/prompts.jsonl, max_length: 128, pack: false}}
lora: {{r: 8, alpha: 16, dropout: 0.0}}
training: {{max_steps: {steps}, batch_size: 4, grad_accum: 1, lr: 0.005, gradient_checkpointing: false,
           precision: fp32, save_steps: {save}, save_total_limit: null, logging_steps: 1}}
grpo:
  num_generations: 2
  max_completion_length: 8
  beta: {beta}
  rewards:
{rewards}
evaluation: {{prompts: [], eval_loss: false}}
"""
REWARDS = "    - exact\n    - \"regex pattern='[0-9]' weight=0.5\"\n    - {name: length, target_length: 4, weight: 0.1}\n"


def _jsonl(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A workspace as `tuitune demo DIR --no-open` writes it, with prompt records in data/."""
    root = tmp_path_factory.mktemp("grpo")
    proc = run_cli("demo", "ws", "--no-open", cwd=root)
    assert proc.returncode == 0, proc.stderr
    ws = root / "ws"
    _jsonl(ws / "data" / "prompts.jsonl", PROMPTS)
    return ws


def _config(ws: Path, name: str, steps=3, save=2, beta=0.0, rewards=REWARDS, **edits) -> str:
    text = GRPO_YAML.format(steps=steps, save=save, beta=beta, rewards=rewards)
    for old, new in edits.items():
        text = text.replace(old, new)
    (ws / "configs" / f"{name}.yaml").write_text(text, encoding="utf-8")
    return f"configs/{name}.yaml"


# --- the config ---------------------------------------------------------------------------------

@pytest.mark.parametrize("edit, needles", [
    ({"pack: false": "pack: true"}, ["data.pack", "grpo", "pack: false"]),
    ({"num_generations: 2": "num_generations: 3"},
     ["grpo.num_generations 3", "batch_size 4 × grad_accum 1 × 1 GPU(s) = 4", "multiple of 3"]),
    ({"    - exact\n": "    - exakt\n"}, ["unknown reward 'exakt'", "exact, contains, regex, length", "file.py:function"]),
    ({"\"regex pattern='[0-9]' weight=0.5\"": "regex"}, ["reward regex needs pattern"]),
    ({"\"regex pattern='[0-9]' weight=0.5\"": "\"regex pattern='(' \""}, ["not a regular expression"]),
    ({"    - exact\n": "    - {name: exact, target_length: 3}\n"}, ["exact takes weight, pattern, not target_length"]),
])
def test_settings_that_cannot_work_are_one_line(demo, edit, needles):
    cfg = _config(demo, "bad", **edit)
    assert_one_line_error(run_cli("config", "check", cfg, cwd=demo), *needles)


def test_the_data_must_be_prompts_with_answers_for_exact(demo):
    cfg = _config(demo, "conv", **{"data/prompts.jsonl": "data/self_cognition.jsonl"})
    assert_one_line_error(run_cli("config", "check", cfg, cwd=demo), "self_cognition.jsonl", "line 1",
                          "task grpo learns from prompt records", "fields conversation")
    _jsonl(demo / "data" / "no_answers.jsonl", [{"prompt": "Say hi"}])
    cfg = _config(demo, "noans", **{"data/prompts.jsonl": "data/no_answers.jsonl"})
    assert_one_line_error(run_cli("config", "check", cfg, cwd=demo), "reward exact", "no_answers.jsonl line 1",
                          "has none")
    cfg = _config(demo, "sft-on-prompts", **{"task: grpo": "task: sft"})
    assert_one_line_error(run_cli("config", "check", cfg, cwd=demo), "prompts.jsonl", "prompt record for grpo",
                          "task is sft")


def test_presets_are_valid_and_pair_format_with_correctness():
    from tuitune.config import get_preset

    for name in ("grpo", "smol-grpo"):
        cfg = get_preset(name)
        assert cfg.task == "grpo" and not cfg.data.pack
        assert cfg.effective_batch_size % cfg.grpo.num_generations == 0
        assert {r.name for r in cfg.grpo.rewards} == {"exact", "regex"}
    assert get_preset("grpo").method == "qlora" and get_preset("smol-grpo").method == "lora"
    smol = get_preset("smol-grpo")
    assert smol.grpo.max_completion_length <= 64 and not smol.training.gradient_checkpointing


def test_the_form_edits_rewards_one_a_line():
    from tuitune.config.fields import from_text, spec, to_text, validate_field
    from tuitune.config.schema_grpo import GrpoConfig

    assert spec("grpo.rewards").kind == "lines"
    text = "exact weight=2\nregex pattern='#### -?\\d+$' weight=0.5\nlength target_length=64"
    assert validate_field("grpo.rewards", text) is None
    g = GrpoConfig.model_validate({"rewards": from_text("grpo.rewards", text)})
    assert [(r.name, r.weight) for r in g.rewards] == [("exact", 2.0), ("regex", 0.5), ("length", 1.0)]
    assert g.rewards[1].pattern == "#### -?\\d+$" and to_text("grpo.rewards", g.rewards) == text.replace(
        "regex pattern='#### -?\\d+$' weight=0.5", "regex weight=0.5 pattern='#### -?\\d+$'")
    assert "did you mean 'regex'" in validate_field("grpo.rewards", "regexp pattern=x")


def test_grpo_config_carries_the_section_and_the_run_arguments():
    from tuitune.config import RunConfig, to_training_arguments
    from tuitune.train.grpo import grpo_arguments

    cfg = RunConfig.model_validate({"model": "m", "task": "grpo", "data": {"pack": False},
                                    "training": {"batch_size": 4, "grad_accum": 2, "lr": 1e-4, "logging_steps": 3,
                                                 "gradient_checkpointing": False, "precision": "fp32"},
                                    "grpo": {"num_generations": 4, "max_completion_length": 16, "beta": 0.04,
                                             "loss_type": "dr_grpo", "epsilon": 0.3, "temperature": 0.7,
                                             "rewards": ["exact weight=2", "regex pattern=x weight=0.5"]}})
    a = grpo_arguments(cfg, to_training_arguments(cfg, "/tmp/out", deepspeed=None))
    assert (a.num_generations, a.max_completion_length, a.beta, a.loss_type, a.epsilon, a.temperature) == (
        4, 16, 0.04, "dr_grpo", 0.3, 0.7)
    assert a.reward_weights == [2.0, 0.5] and a.generation_batch_size == 8
    # GRPOConfig's own defaults (lr 1e-6, bf16, checkpointing, logging every 10) do not win over the run's.
    assert a.learning_rate == 1e-4 and not a.bf16 and a.logging_steps == 3 and not a.use_vllm


# --- the rewards ----------------------------------------------------------------------------------

def test_numbers_and_text_are_normalised():
    from tuitune.train.rewards import extract_answer, normalize

    assert normalize("1,000") == normalize("1000.0") == normalize(" 1000. ") == "1000"
    assert normalize("-3.50") == "-3.5" and normalize("  Paris!  ") == "paris" and normalize("New   York") == "new york"
    assert extract_answer("so 40 + 2 = 42\n#### 42") == "42"
    assert extract_answer("it is 7, then 1,250 apples") == "1,250"          # no ####: the last number
    assert extract_answer("<answer>Rome</answer>", r"<answer>(.*?)</answer>") == "Rome"
    assert extract_answer("no number here") is None


def test_the_built_in_rewards():
    from tuitune.config.schema_grpo import RewardSpec
    from tuitune.train.rewards import contains, exact, length, regex, reward_functions

    assert exact("5 + 5 = 10\n#### 1,000", answer="1000.0") == 1.0
    assert exact("#### 999", answer="1000") == 0.0 and exact("nothing", answer="3") == 0.0
    assert exact("The answer is 72.", answer="Natalia sold 48 + 24 = 72 clips.\n#### 72") == 1.0
    assert exact("<a> ROME </a>", answer="rome", pattern=r"<a>(.*?)</a>") == 1.0
    assert contains("It is  PARIS, France", answer="paris") == 1.0 and contains("Lyon", text="paris") == 0.0
    assert regex("...\n#### 12", pattern=r"####\s*\d+$") == 1.0 and regex("12", pattern=r"####") == 0.0
    assert length("x", target_length=4, tokens=4) == 0.0 and length("x", target_length=4, tokens=6) == -0.5
    assert length("x", target_length=4, tokens=100) == -1.0
    specs = [RewardSpec(name="exact", weight=2), RewardSpec(name="regex", pattern="#"),
             RewardSpec(name="regex", pattern="x")]
    funcs, weights = reward_functions(specs, Path("."))
    assert [f.__name__ for f in funcs] == ["exact", "regex", "regex_2"] and weights == [2.0, 1.0, 1.0]
    # As TRL calls them: completions plus the dataset's columns, one value a completion.
    out = funcs[0](prompts=["p", "p"], completions=["#### 4", "#### 5"], completion_ids=[[1], [2]],
                   answer=["4", "4"], record=["d.jsonl line 1"] * 2, trainer_state=None)
    assert out == [1.0, 0.0]


USER_REWARDS = {
    "good.py": "def short(completions, **kwargs):\n    return [1.0 if len(c) < 20 else 0.0 for c in completions]\n",
    "syntax.py": "def f(completions, **kwargs)\n    return [1.0]\n",
    "sig.py": "def f(text):\n    return [1.0]\n",
    "badtype.py": "def f(completions, **kwargs):\n    return 'good'\n",
    "items.py": "def f(completions, **kwargs):\n    return ['yes' for c in completions]\n",
    "raises.py": "def f(completions, answer, **kwargs):\n    return [int(a) / 0 for a in answer]\n",
}


@pytest.mark.parametrize("name, needles", [
    ("good.py:short", None),
    ("missing.py:f", ["missing.py does not exist"]),
    ("syntax.py:f", ["syntax.py line 1: syntax error"]),
    ("good.py:nope", ["good.py has no function 'nope'", "it has short"]),
    ("sig.py:f", ["write it as def f(completions, **kwargs)"]),
    ("badtype.py:f", ["returned str", "return a list of numbers"]),
    ("items.py:f", ["returned a str ('yes')"]),
    ("raises.py:f", ["raised ZeroDivisionError", "prompts.jsonl line 1"]),
])
def test_a_users_reward_is_tried_before_the_run(demo, name, needles):
    for file, code in USER_REWARDS.items():
        (demo / file).write_text(code, encoding="utf-8")
    cfg = _config(demo, "user", rewards=f"    - {name}\n")
    proc = run_cli("config", "check", cfg, cwd=demo)
    if needles is None:
        assert proc.returncode == 0, proc.stderr
    else:
        assert_one_line_error(proc, f"reward {name}", *needles)


def test_a_users_reward_is_only_imported_when_named(demo):
    (demo / "loud.py").write_text("open('imported', 'w').write('yes')\n"
                                  "def f(completions, **kw):\n    return [0.0] * len(completions)\n")
    assert run_cli("config", "check", _config(demo, "plain"), cwd=demo).returncode == 0
    assert not (demo / "imported").exists()
    assert run_cli("config", "check", _config(demo, "loud", rewards="    - loud.py:f\n"), cwd=demo).returncode == 0
    assert (demo / "imported").exists()   # by the check's own process, in the workspace


# --- prompt records ------------------------------------------------------------------------------

def test_the_converters_make_prompt_records():
    from tuitune.data.formats import to_prompt_mapper
    from tuitune.data.prompts import detect

    gsm = {"question": "Natalia sold 48 clips... How many?", "answer": "48 / 2 = 24\n48 + 24 = 72\n#### 1,072"}
    assert detect(gsm).format == "gsm8k"
    assert to_prompt_mapper("gsm8k")(gsm) == {"prompt": gsm["question"], "answer": "1,072"}
    conv = {"conversation": [{"system": "Be brief.", "input": "2+2?", "output": "4"},
                             {"input": "And 3+3?", "output": "6"}]}
    assert to_prompt_mapper("xtuner")(conv) == {"conversation": [conv["conversation"][0]], "prompt": "And 3+3?",
                                                "answer": "6"}
    assert to_prompt_mapper("alpaca")({"instruction": "Translate", "input": "chat", "output": "cat"}) == {
        "prompt": "Translate\nchat", "answer": "cat"}
    assert detect({"prompt": "x", "answer": "y"}).format == "prompts" and detect({"prompt": "x", "chosen": "a",
                                                                                   "rejected": "b"}) is None


def test_prompt_records_are_checked_by_line(tmp_path):
    from tuitune.data.prompts import load_prompts
    from tuitune.errors import TuituneError

    good = _jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "answer": 12}, {"prompt": "q", "system": "s"}])
    assert [r for _, r in load_prompts(good)] == [{"prompt": "p", "answer": "12"}, {"prompt": "q", "system": "s"}]
    for bad, needle in [({"prompt": ""}, "line 2: \"prompt\" is empty"),
                        ({"prompt": "q", "answer": ["x"]}, "line 2: \"answer\" is list"),
                        ({"conversation": [{"input": "a", "output": "b"}]}, "line 2: task grpo learns from prompt")]:
        with pytest.raises(TuituneError, match=needle):
            load_prompts(_jsonl(tmp_path / "b.jsonl", [{"prompt": "ok"}, bad]))


# --- a real run ----------------------------------------------------------------------------------

def test_grpo_trains_the_tiny_model_and_logs_each_reward(demo):
    cfg = _config(demo, "grpo", beta=0.04)
    proc = subprocess.run(["tuitune", "train", cfg, "--foreground", "--name", "g"], cwd=demo, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = demo / "runs" / "g"
    train = events(run, "train")
    assert state(run)["status"] == "finished" and [e["step"] for e in train] == [1, 2, 3]
    for e in train:
        assert e["reward_regex_mean"] is not None and e["reward_exact_std"] is not None
        assert e["reward_length_mean"] == -1.0          # 8 tokens against a target of 4
        assert e["completion_length"] == 8.0 and e["kl"] is not None and e["clip_ratio"] is not None
        want = e["reward_exact_mean"] + 0.5 * e["reward_regex_mean"] + 0.1 * e["reward_length_mean"]
        assert e["reward_mean"] == pytest.approx(want, abs=1e-5)
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
