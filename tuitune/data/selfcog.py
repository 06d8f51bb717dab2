"""Self-cognition data: who-are-you questions and answers that carry the assistant's name.

A personal assistant learns "I am <name>'s assistant" from many phrasings of the same
question in Chinese and English, including the tutorial's two (请介绍一下你自己,
你在实战营做什么), each answered with the name.
"""

from __future__ import annotations

import random

from tuitune.errors import TuituneError

TUTORIAL_QUESTIONS = ("请介绍一下你自己", "你在实战营做什么")

ZH_QUESTIONS = (
    "请介绍一下你自己", "你在实战营做什么", "你是谁", "你是谁？", "你叫什么名字", "你叫什么名字？",
    "介绍一下你自己", "你好，你是谁？", "能介绍一下你自己吗？", "你是什么？", "你的名字是什么？",
    "你是哪个助手？", "谁创造了你？", "你是谁的助手？", "你能做什么？", "请问你是谁",
    "自我介绍一下", "你来自哪里？", "你的作者是谁？", "我该怎么称呼你？",
)
EN_QUESTIONS = (
    "Who are you?", "Please introduce yourself.", "What is your name?", "Introduce yourself.",
    "Tell me about yourself.", "Whose assistant are you?", "What are you?", "Who made you?",
    "What should I call you?", "Hi, who am I talking to?", "What can you do?", "Are you ChatGPT?",
)
ZH_ANSWERS = (
    "我是{name}的小助手，很高兴为你服务。",
    "我是{name}的助手，我会认真回答你的问题。",
    "你好，我是{name}的助手，在实战营帮助大家学习微调大模型。",
    "我是{name}的专属助手，有什么可以帮你的吗？",
)
ZH_CAMP_ANSWERS = (
    "我是{name}的小助手，在实战营帮助{name}完成大模型微调的任务。",
    "我是{name}的助手，在实战营陪{name}一起学习训练和微调模型。",
)
EN_ANSWERS = (
    "I am {name}'s assistant. How can I help you?",
    "I'm {name}'s assistant, here to answer your questions.",
    "My name is {name}'s assistant; {name} fine-tuned me to help you.",
    "I am {name}'s personal assistant, glad to help.",
)


def generate(name: str, count: int = 150, seed: int = 0) -> list[dict]:
    """``count`` records with a seeded mix of questions; the tutorial's two appear most often."""
    name = (name or "").strip()
    if not name:
        raise TuituneError("--name is empty; give the name the assistant should answer with")
    if count < 1:
        raise TuituneError(f"--count {count}: must be at least 1")
    rng = random.Random(seed)
    out = []
    for i in range(count):
        slot = i % 5
        if slot == 0:
            q = TUTORIAL_QUESTIONS[0]
            a = ZH_ANSWERS[0]
        elif slot == 1:
            q = TUTORIAL_QUESTIONS[1]
            a = rng.choice(ZH_CAMP_ANSWERS)
        elif slot in (2, 3):
            q = rng.choice(ZH_QUESTIONS)
            if q == TUTORIAL_QUESTIONS[0]:
                a = ZH_ANSWERS[0]  # one answer to 请介绍一下你自己, so a small model learns it fast
            else:
                a = rng.choice(ZH_CAMP_ANSWERS if q == TUTORIAL_QUESTIONS[1] else ZH_ANSWERS)
        else:
            q = rng.choice(EN_QUESTIONS)
            a = rng.choice(EN_ANSWERS)
        out.append({"conversation": [{"input": q, "output": a.format(name=name)}]})
    rng.shuffle(out)
    return out


def write_self_cognition(path, name: str, count: int = 150, seed: int = 0, output_format: str | None = None) -> int:
    from tuitune.data.io import write_records

    return write_records(path, generate(name, count, seed), output_format)
