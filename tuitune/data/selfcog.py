"""Self-cognition data: who-are-you questions and answers that carry the assistant's name.

A personal assistant learns "I am <name>'s assistant" from many phrasings of the same
question in Chinese and English, including the tutorial's two (请介绍一下你自己,
你在实战营做什么), each answered with the name.
"""

from __future__ import annotations

import random

from tuitune.errors import FIELD, TuituneError

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
# The answers to 请介绍一下你自己 all begin alike, so a small model learns the name fast, and
# differ after it, so every record is distinct.
_INTRO_HEAD = "我是{name}的小助手，"
_INTRO_BODIES = ("很高兴为你服务", "很高兴认识你", "可以回答你的各种问题", "随时为你解答问题",
                 "专门帮助你学习和工作", "会认真回答你的每一个问题")
_INTRO_ENDS = ("。", "！有什么可以帮你的吗？", "，请问有什么需要？", "，欢迎向我提问。", "，有问题尽管问我。")
ZH_INTRO_ANSWERS = tuple(_INTRO_HEAD + b + e for b in _INTRO_BODIES for e in _INTRO_ENDS)
ZH_CAMP_ANSWERS = tuple(
    head + "在实战营" + what + end
    for head in ("我是{name}的小助手，", "我是{name}的助手，")
    for what in ("帮助{name}完成大模型微调的任务", "陪{name}一起学习训练和微调模型", "协助{name}整理数据、训练模型",
                 "帮{name}回答学员的问题")
    for end in ("。", "，也很乐意帮助你。"))
ZH_ANSWERS = (
    "我是{name}的小助手，很高兴为你服务。",
    "我是{name}的助手，我会认真回答你的问题。",
    "你好，我是{name}的助手，在实战营帮助大家学习微调大模型。",
    "我是{name}的专属助手，有什么可以帮你的吗？",
    "我是{name}的小助手，你可以叫我小助手。",
    "你好！我是{name}的助手，由{name}微调而来，很高兴认识你。",
    "我是{name}的小助手，可以回答问题、陪你学习。",
    "我是{name}的助手，有问题尽管问我。",
)
EN_ANSWERS = (
    "I am {name}'s assistant. How can I help you?",
    "I'm {name}'s assistant, here to answer your questions.",
    "I am {name}'s assistant; {name} fine-tuned me to help you.",
    "I am {name}'s personal assistant, glad to help.",
    "Hello! I am {name}'s assistant. Ask me anything.",
    "I'm {name}'s assistant. {name} trained me to help with your questions.",
    "You can call me {name}'s assistant. What can I do for you?",
    "I am the assistant of {name}, happy to help you.",
)


def _pools() -> list[list[tuple[str, str]]]:
    """Every distinct (question, answer) pair, by slot: the two tutorial questions, Chinese, English."""
    zh = [(q, a) for q in ZH_QUESTIONS if q not in TUTORIAL_QUESTIONS for a in ZH_ANSWERS]
    return [[(TUTORIAL_QUESTIONS[0], a) for a in ZH_INTRO_ANSWERS],
            [(TUTORIAL_QUESTIONS[1], a) for a in ZH_CAMP_ANSWERS],
            zh,
            [(q, a) for q in EN_QUESTIONS for a in EN_ANSWERS]]


#: The most distinct records the phrasings make (for any name).
MAX_RECORDS = sum(len(p) for p in _pools())


def generate(name: str, count: int = 150, seed: int = 0) -> list[dict]:
    """``count`` distinct records with a seeded mix of phrasings; the tutorial's two questions
    appear most often. More than :data:`MAX_RECORDS` is an error (the phrasings run out)."""
    name = (name or "").strip()
    if not name:
        raise TuituneError(f"{FIELD} is empty; give the name the assistant should answer with", field="name")
    if count < 1:
        raise TuituneError(f"{FIELD} {count}: must be at least 1", field="count")
    if count > MAX_RECORDS:
        raise TuituneError(f"{FIELD} {count}: the phrasings make only {MAX_RECORDS} distinct records; "
                           f"ask for {MAX_RECORDS} or fewer (repeating a record teaches nothing new)", field="count")
    rng = random.Random(seed)
    pools = _pools()
    intro_first = pools[0][0]
    for p in pools:
        rng.shuffle(p)
    # The intro answer most often seen first ("…很高兴为你服务。") leads, as the demo shows it.
    pools[0].remove(intro_first)
    pools[0].insert(0, intro_first)
    for p in pools:
        p.reverse()  # pop() from the end takes them in order
    picked: list[tuple[str, str]] = []
    for i in range(count):
        slot = (0, 1, 2, 2, 3)[i % 5]
        pool = pools[slot] if pools[slot] else max(pools, key=len)  # a spent slot lends to the largest
        picked.append(pool.pop())
    rng.shuffle(picked)
    # Hand the intro answers out in order of appearance, so the first one in the file is the lead.
    intros = sorted((a for q, a in picked if q == TUTORIAL_QUESTIONS[0]), key=lambda a: a != intro_first[1])
    out = []
    k = 0
    for q, a in picked:
        if q == TUTORIAL_QUESTIONS[0]:
            a, k = intros[k], k + 1
        out.append({"conversation": [{"input": q, "output": a.format(name=name)}]})
    return out


def write_self_cognition(path, name: str, count: int = 150, seed: int = 0, output_format: str | None = None) -> int:
    from tuitune.data.io import write_records

    return write_records(path, generate(name, count, seed), output_format)
