"""The tiny offline chat model and the sample workspace.

Nothing here downloads anything. ``build_tiny_model`` trains a byte-level BPE
tokenizer with ``tokenizers`` on a generated Chinese and English corpus, writes a
ChatML chat template, and saves a randomly initialised Qwen2 causal LM (about
0.7 M parameters) with ``save_pretrained``. The result loads through the normal
``AutoTokenizer`` / ``AutoModelForCausalLM.from_pretrained`` path, so every
feature that works on it works on a real model folder too.

The build is deterministic: the same ``seed`` gives byte-identical weights and
tokenizer files.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
from pathlib import Path

from tuitune.errors import TuituneError
from tuitune.workspace import Workspace

#: Bump when the recipe below changes, so cached copies are rebuilt.
TINY_MODEL_VERSION = "1"
TINY_MODEL_NAME = "tiny-chat"

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

#: ChatML, as Qwen2 uses it, without a default system prompt.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Architecture measured to learn 20 question/answer pairs in about 10 s on a CPU.
TINY_ARCH = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)
VOCAB_SIZE = 3000

# --- the corpus -------------------------------------------------------------------------

_ZH_SUBJECTS = ["我", "你", "他", "她", "我们", "医生", "老师", "学生", "病人", "助手", "小明", "工程师",
                "研究员", "同学", "朋友", "用户", "模型", "团队", "专家", "护士"]
_ZH_VERBS = ["喜欢", "需要", "学习", "介绍", "研究", "讨论", "使用", "训练", "回答", "帮助", "了解", "完成",
             "参加", "准备", "检查", "治疗", "阅读", "编写", "测试", "解释"]
_ZH_OBJECTS = ["问题", "模型", "数据", "药物", "课程", "项目", "实战营", "代码", "论文", "方法", "答案",
               "症状", "剂量", "副作用", "语言", "知识", "工具", "计划", "结果", "经验", "自己", "任务",
               "电脑", "显卡", "文件", "表格", "对话", "内容", "医院", "城市"]
_ZH_ADVERBS = ["今天", "明天", "现在", "一直", "经常", "认真地", "很快地", "仔细地", "已经", "正在"]
_ZH_QUESTIONS = ["请介绍一下你自己", "你在实战营做什么", "你是谁", "你叫什么名字", "你能做什么",
                 "这个药有什么副作用", "怎么训练模型", "什么是微调", "你好", "谢谢你的帮助",
                 "请问怎么使用这个工具", "这个问题怎么解决", "你来自哪里", "你的作者是谁"]
_ZH_PUNCT = ["。", "！", "？", "，", "；"]

_EN_SUBJECTS = ["I", "you", "we", "they", "the doctor", "the model", "a student", "my friend",
                "the assistant", "the patient", "our team", "the engineer", "she", "he"]
_EN_VERBS = ["like", "need", "train", "explain", "answer", "read", "write", "use", "study", "test",
             "build", "check", "help", "describe", "take", "compare", "learn", "merge", "load"]
_EN_OBJECTS = ["the question", "a model", "the data", "this drug", "the course", "a project", "the code",
               "a paper", "the method", "the answer", "the symptoms", "the dose", "side effects",
               "the language", "a tool", "the plan", "the result", "the GPU", "a spreadsheet",
               "the adapter", "the checkpoint", "my name", "the weather", "a book", "the city"]
_EN_TAILS = ["today", "tomorrow", "every day", "carefully", "quickly", "again", "with care",
             "on the server", "in the terminal", "before lunch", "after the test", "for the user"]
_EN_QUESTIONS = ["Who are you?", "What can you do?", "Please introduce yourself.", "What is your name?",
                 "How do I fine-tune a model?", "What are the side effects of this drug?",
                 "Can you help me?", "Thank you for your help.", "What is LoRA?", "Hello!"]
_NAMES = ["Alice", "Bob", "Carol", "Dave", "张三", "李四", "王五", "小红", "Ada", "Linus", "伊丽莎白"]


def tiny_corpus(lines: int = 8000, seed: int = 0) -> list[str]:
    """Generated Chinese and English lines the tokenizer is trained on.

    Varied enough that common words become tokens but whole questions do not.
    """
    rng = random.Random(seed)
    out: list[str] = []
    for i in range(lines):
        kind = i % 6
        if kind == 0:
            s = (rng.choice(_ZH_ADVERBS) + rng.choice(_ZH_SUBJECTS) + rng.choice(_ZH_VERBS)
                 + rng.choice(_ZH_OBJECTS) + rng.choice(_ZH_PUNCT))
        elif kind == 1:
            s = (rng.choice(_ZH_SUBJECTS) + rng.choice(_ZH_VERBS) + rng.choice(_ZH_OBJECTS) + "，"
                 + rng.choice(_ZH_SUBJECTS) + rng.choice(_ZH_VERBS) + rng.choice(_ZH_OBJECTS) + "。")
        elif kind == 2:
            s = f"{rng.choice(_ZH_QUESTIONS)}？我是{rng.choice(_NAMES)}的助手，{rng.choice(_ZH_VERBS)}{rng.choice(_ZH_OBJECTS)}。"
        elif kind == 3:
            s = (f"{rng.choice(_EN_SUBJECTS).capitalize()} {rng.choice(_EN_VERBS)} "
                 f"{rng.choice(_EN_OBJECTS)} {rng.choice(_EN_TAILS)}.")
        elif kind == 4:
            s = (f"{rng.choice(_EN_QUESTIONS)} I am {rng.choice(_NAMES)}'s assistant and I "
                 f"{rng.choice(_EN_VERBS)} {rng.choice(_EN_OBJECTS)}.")
        else:
            n = rng.randint(0, 9999)
            s = f"{rng.choice(_EN_SUBJECTS)} {rng.choice(_EN_VERBS)} {n} {rng.choice(_EN_OBJECTS)}, {n % 97} mg."
        out.append(s)
    return out


def _train_tokenizer(seed: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=9,
        show_progress=False,
    )
    tok.train_from_iterator(tiny_corpus(seed=seed), trainer=trainer)
    return tok


def build_tiny_model(out_dir: str | Path, seed: int = 0, max_shard_size: str | int | None = None) -> Path:
    """Write the tiny chat model to ``out_dir`` (created; must not exist or be empty).

    ``max_shard_size`` (e.g. ``"1MB"``) saves the weights in several safetensors
    shards with an index, as large models are.
    """
    import torch
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise TuituneError(f"{out_dir}: folder is not empty; choose a new folder for the tiny model")
    raw = _train_tokenizer(seed)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=TINY_ARCH["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        **TINY_ARCH,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id, eos_token_id=[eos_id, pad_id], pad_token_id=pad_id,
        max_new_tokens=64,
    )
    from tuitune.fsutil import fix_modes, make_temp_dir

    tmp = make_temp_dir(prefix=f".{out_dir.name}.", dir=out_dir.parent if out_dir.parent.exists() else None)
    try:
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(tmp, safe_serialization=True, **kwargs)
        tokenizer.save_pretrained(tmp)
        fix_modes(tmp)  # safetensors writes 0600 shards
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def cache_root() -> Path:
    base = os.environ.get("TUITUNE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tuitune")
    return Path(base)


def tiny_model_path(seed: int = 0, max_shard_size: str | None = None) -> Path:
    """The tiny model, built once and cached (``$TUITUNE_CACHE`` or ``~/.cache/tuitune``)."""
    key = hashlib.sha1(f"{TINY_MODEL_VERSION}:{seed}:{max_shard_size}".encode()).hexdigest()[:10]
    path = cache_root() / f"{TINY_MODEL_NAME}-{key}"
    if not (path / "config.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            build_tiny_model(path, seed=seed, max_shard_size=max_shard_size)
        except TuituneError:
            # Another process finished the same build first; its copy is identical.
            if not (path / "config.json").exists():
                raise
        except OSError:
            if not (path / "config.json").exists():
                raise
    return path


# --- the sample workspace -------------------------------------------------------------------

def sample_data_dir() -> Path:
    """The ``sample_data/`` folder shipped beside the package."""
    here = Path(__file__).resolve().parent.parent / "sample_data"
    if here.is_dir():
        return here
    raise TuituneError("sample_data/ not found beside the tuitune package; install tuitune from its "
                       "source folder with `pip install -e .`")


def write_demo_workspace(root: str | Path) -> Workspace:
    """Write the sample workspace: sample data in data/, the tiny model in models/, configs.

    Existing files are never overwritten: a user's edits in a demo workspace survive
    a second ``tuitune demo``.
    """
    ws = Workspace.at(root).ensure()
    model_dir = ws.models / TINY_MODEL_NAME
    if not (model_dir / "config.json").exists():
        if model_dir.exists() and not any(model_dir.iterdir()):
            model_dir.rmdir()
        if model_dir.exists():
            raise TuituneError(f"{model_dir}: exists without config.json; move it away and run `tuitune demo` again")
        shutil.copytree(tiny_model_path(), model_dir)
    src = sample_data_dir()
    for item in sorted(src.rglob("*")):
        if item.is_dir() or item.name.startswith("."):
            continue
        rel = item.relative_to(src)
        # configs/*.yaml in sample_data go to the workspace's configs/; everything else to data/.
        dest = (ws.root / rel) if rel.parts[0] == "configs" else (ws.data / rel)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, dest)
    return ws
