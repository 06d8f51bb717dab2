"""The tiny offline model: deterministic, loads the normal way, generates, and can learn."""

import hashlib

import pytest


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_build_is_deterministic(tmp_path, tiny_model):
    from tuitune.sample import build_tiny_model

    again = build_tiny_model(tmp_path / "again")
    assert _digest(again) == _digest(tiny_model)


def test_build_refuses_a_non_empty_folder(tmp_path):
    from tuitune.errors import TuituneError
    from tuitune.sample import build_tiny_model

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("user data")
    with pytest.raises(TuituneError, match="not empty"):
        build_tiny_model(tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "user data"


def test_loads_with_auto_classes_and_generates(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    n = sum(p.numel() for p in model.parameters())
    assert 0.5e6 <= n <= 5e6
    assert model.config.model_type == "qwen2" and model.config.tie_word_embeddings
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert (tiny_model / "chat_template.jinja").is_file()
    prompt = tok.apply_chat_template([{"role": "user", "content": "你好"}], add_generation_prompt=True,
                                     tokenize=False)
    assert prompt == "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]
    # Chinese and English text is split into sub-words, not single tokens or raw bytes only.
    assert 2 <= len(tok.tokenize("请介绍一下你自己")) <= 8
    assert tok.decode(tok("Who are you? 我是Alice的助手。")["input_ids"]) == "Who are you? 我是Alice的助手。"


def test_sharded_build_loads(tmp_path):
    from transformers import AutoModelForCausalLM

    from tuitune.sample import build_tiny_model

    folder = build_tiny_model(tmp_path / "sharded", max_shard_size="1MB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (folder / "model.safetensors.index.json").is_file()
    AutoModelForCausalLM.from_pretrained(folder)


QUESTIONS = ["请介绍一下你自己", "你在实战营做什么", "你是谁", "你叫什么名字", "你能做什么", "Who are you?",
             "What is your name?", "What can you do?", "Please introduce yourself.", "Can you help me?",
             "这个药有什么副作用", "怎么训练模型", "什么是微调", "你好", "谢谢你的帮助", "What is LoRA?",
             "Hello!", "你来自哪里", "你的作者是谁", "How do I fine-tune a model?"]
ANSWERS = ["我是Alice的助手，我帮助用户。", "我在实战营学习训练模型。", "我是Alice的小助手。", "我的名字是小红。",
           "我能回答问题。", "I am Alice's assistant.", "My name is Ada.", "I can answer the question.",
           "I am a model trained by Alice.", "Yes, I can help you.", "副作用需要医生检查。", "先准备数据，再训练。",
           "微调是训练已有模型。", "你好，我是助手。", "不用谢。", "LoRA trains a small adapter.",
           "Hello, how can I help?", "我来自城市。", "我的作者是Alice。", "Use the adapter on the GPU."]


def test_tiny_model_learns_twenty_answers_exactly(tiny_model):
    """A full fine-tune on 20 pairs makes every greedy answer exact: the model can learn."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                       tokenize=False) for q in QUESTIONS]
    rows = []
    for prompt, answer in zip(prompts, ANSWERS):
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        a = tok(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append((p + a, [-100] * len(p) + a))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x, _ in rows])
    labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in rows])
    mask = (torch.arange(width)[None] < torch.tensor([len(x) for x, _ in rows])[:, None]).long()
    before = model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(120):
        idx = torch.randperm(len(rows))[:16]
        loss = model(input_ids=ids[idx], attention_mask=mask[idx], labels=labels[idx]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    after = model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
    assert after < before / 10
    wrong = []
    for prompt, answer in zip(prompts, ANSWERS):
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=24, do_sample=False)
        got = tok.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True)
        if got != answer:
            wrong.append((prompt, got, answer))
    assert not wrong


def test_the_readme_s_demo_folder_is_ignored_in_the_clone():
    """The README's first command (`tuitune demo`, run in the clone) writes ./tuitune-demo: git ignores it."""
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git clone")
    proc = subprocess.run(["git", "check-ignore", "-q", "tuitune-demo/configs/tiny-demo.yaml"], cwd=root)
    assert proc.returncode == 0, "tuitune-demo/ would show as untracked after the README's first command"
