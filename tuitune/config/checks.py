"""Checks across fields and against this machine: each issue says what to do.

``check_config`` is the slow part of validation (it may import torch, probe
bitsandbytes and load the tokenizer); the schema itself is checked on load.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from tuitune.config.presets import PRESETS
from tuitune.config.schema import RunConfig
from tuitune.train.tracking import trackers_problem

ERROR, WARN = "error", "warn"

DATA_SUFFIXES = (".json", ".jsonl")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


@dataclass
class Issue:
    level: str      # error | warn
    field: str      # dotted field name
    message: str    # what is wrong and what to do
    line: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self, where: str | Path | None = None) -> str:
        at = f"line {self.line}: " if self.line else ""
        prefix = f"{where}: " if where else ""
        return f"{prefix}{at}{self.field}: {self.message}"


@functools.lru_cache(maxsize=1)
def _bnb_check():
    """The bitsandbytes probe (the doctor's row too) once per process: it takes seconds (it quantizes on each device)."""
    from tuitune.hardware import probe_bitsandbytes

    return probe_bitsandbytes()


def _device() -> tuple[bool, bool, int]:
    """(cuda available, bf16 on the GPU, number of visible GPUs), from the one hardware probe."""
    from tuitune.hardware import probe_hardware
    from tuitune.gpus import gpu_inventory

    hw = probe_hardware()
    return hw.cuda, hw.cuda_bf16, len(gpu_inventory()) if hw.cuda else 0


def check_files(cfg: RunConfig) -> list[Issue]:
    """The fast checks: model folder and data files exist. Cheap enough to run on every keystroke."""
    out: list[Issue] = []
    if cfg.model_is_local():
        p = cfg.resolve(cfg.model)
        if not p.is_dir():
            out.append(Issue(ERROR, "model", f"model folder {p} does not exist; give a folder with config.json "
                             "and tokenizer files, or a hub id like org/name"))
        else:
            if not (p / "config.json").is_file():
                out.append(Issue(ERROR, "model", f"{p} has no config.json; point model at the folder that "
                                 "`save_pretrained` wrote (the one holding config.json)"))
            if not any((p / f).is_file() for f in TOKENIZER_FILES):
                out.append(Issue(ERROR, "model", f"{p} has no tokenizer (tokenizer.json or tokenizer_config.json); "
                                 "copy the tokenizer files from the base model into it"))
            out += _check_remote_code(cfg, p / "config.json")
    sources = cfg.data.sources()
    for i, src in enumerate(sources, 1):
        train = cfg.resolve(src.path)
        entry = f"entry {i} of the mix: " if len(sources) > 1 else ""
        if not train.is_file():
            out.append(Issue(ERROR, "data.train", f"{entry}data file {train} does not exist; create it in the Data "
                             "step (`tuitune data convert ...`) or fix the path"))
        elif train.suffix.lower() not in DATA_SUFFIXES:
            out.append(Issue(ERROR, "data.train", f"{entry}{train.name} is not JSON or JSONL; convert it first: "
                             f"`tuitune data convert {src.path} -o data/{train.stem}.jsonl`"))
        else:
            out += _check_kind(cfg, "data.train", train)
    if cfg.data.eval:
        ev = cfg.resolve(cfg.data.eval)
        if not ev.is_file():
            out.append(Issue(ERROR, "data.eval", f"data file {ev} does not exist; make a split with "
                             "`tuitune data split`, or leave data.eval empty"))
        elif ev.suffix.lower() not in DATA_SUFFIXES:
            out.append(Issue(ERROR, "data.eval", f"{ev.name} is not JSON or JSONL; convert it first with "
                             "`tuitune data convert`"))
        else:
            out += _check_kind(cfg, "data.eval", ev)
    if cfg.preset and cfg.preset not in PRESETS:
        out.append(Issue(WARN, "preset", f"{cfg.preset!r} is not a preset ({', '.join(PRESETS)}); "
                         "`tuitune config show` diffs against the defaults instead"))
    return out


def _check_kind(cfg: RunConfig, field: str, path: Path) -> list[Issue]:
    """Conversations for sft/pretrain, preference pairs for dpo/orpo, prompt records for grpo: the file's
    first record says which."""
    st = path.stat()
    first = _first_record(str(path), st.st_mtime_ns, st.st_size)
    if first is None:
        return []
    from tuitune.data.records import task_mismatch

    wrong = task_mismatch(first[1], first[0], path, cfg.task)
    return [Issue(ERROR, field, wrong)] if wrong else []


def check_rewards(cfg: RunConfig) -> list[Issue]:
    """Task grpo: rewards that read the reference have answers to read (the first training file's first
    record), and each ``file.py:function`` imports and returns a number on that record, tried in a
    separate process (a user's code never runs inside the checking process)."""
    if cfg.task != "grpo":
        return []
    from tuitune.train.rewards import USER_REWARD, needs_answers

    path = cfg.resolve(cfg.data.first_train)
    first = None
    if path.is_file() and path.suffix.lower() in DATA_SUFFIXES:
        st = path.stat()
        first = _first_record(str(path), st.st_mtime_ns, st.st_size)
    rec = first[1] if first and isinstance(first[1], dict) and "prompt" in first[1] else None
    out: list[Issue] = []
    for spec in cfg.grpo.rewards:
        if rec is not None and needs_answers(spec) and not str(rec.get("answer") or "").strip():
            out.append(Issue(ERROR, "grpo.rewards", f"reward {spec.name} checks the completion against the "
                             f"record's answer, but {path.name} {first[0]} has none; give each prompt its "
                             "\"answer\", or use regex/length/your own reward"))
        elif USER_REWARD.match(spec.name):
            from tuitune.train.rewards import check_user_reward

            where = f"{path.name} {first[0]}" if rec is not None else "a made-up record (no data yet)"
            problem = check_user_reward(cfg.workspace, spec.name, rec, where)
            if problem:
                out.append(Issue(ERROR, "grpo.rewards", problem))
    return out


@functools.lru_cache(maxsize=8)
def _first_record(path: str, _mtime: int, _size: int):
    """(where, item) of a data file's first record, read once per version of the file (the screen
    checks on every keystroke); None when it has none or cannot be read (training says why)."""
    from tuitune.data.io import iter_json_items
    from tuitune.errors import TuituneError

    try:
        return next(iter(iter_json_items(Path(path), skip_bad_lines=True)), None)
    except (TuituneError, OSError, ValueError):
        return None


def _check_remote_code(cfg: RunConfig, config_json: Path) -> list[Issue]:
    """A model that ships its own Python (``auto_map``, e.g. InternLM2) needs trust_remote_code."""
    if cfg.trust_remote_code or not config_json.is_file():
        return []
    try:
        auto_map = json.loads(config_json.read_text(encoding="utf-8")).get("auto_map")
    except (OSError, ValueError):
        return [Issue(ERROR, "model", f"{config_json} is not valid JSON; copy it again from the base model")]
    if auto_map:
        return [Issue(ERROR, "trust_remote_code", "this model ships its own Python code (auto_map in "
                      "config.json) and will not load without it; set trust_remote_code: true if you trust "
                      "the model's source")]
    return []


def _check_hub_model(cfg: RunConfig) -> list[Issue]:
    """A hub id must be in the local cache when the hub is offline."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if cfg.model_is_local() or not offline:
        return []
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(cfg.model, "config.json")
    except Exception:
        return []
    if isinstance(cached, str):
        return []
    return [Issue(ERROR, "model", f"{cfg.model} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                  f"download it first (`hf download {cfg.model} --local-dir models/"
                  f"{cfg.model.split('/')[-1]}`) and set model to that folder")]


def _check_machine(cfg: RunConfig) -> list[Issue]:
    out: list[Issue] = _check_hub_model(cfg)
    cuda, bf16, ngpus = _device()
    t, d, q = cfg.training, cfg.distributed, cfg.quantization

    # QLoRA needs a working bitsandbytes.
    if cfg.method == "qlora":
        bnb = _bnb_check()
        if bnb.status == "fail" or "not installed" in bnb.detail:
            out.append(Issue(ERROR, "method", f"qlora needs bitsandbytes: {bnb.detail}; {bnb.fix} "
                             "(or use `method: lora`)"))
        elif not cuda and q.compute_dtype == "bfloat16":
            out.append(Issue(WARN, "quantization.compute_dtype",
                             "bf16 compute on the CPU is ~6x slower than float32 here; use compute_dtype "
                             "float32 (or auto) for CPU runs"))
        elif not cuda and q.compute_dtype == "float16":
            out.append(Issue(WARN, "quantization.compute_dtype",
                             "float16 compute on the CPU is slow and may overflow; use compute_dtype float32 (or auto)"))

    # Precision the hardware can do.
    if t.precision == "bf16" and cuda and not bf16:
        out.append(Issue(ERROR, "training.precision", "this GPU has no bf16 (it needs Ampere or newer); "
                         "use precision fp16 or auto"))
    elif t.precision == "bf16" and not cuda:
        out.append(Issue(WARN, "training.precision", "no GPU: bf16 on the CPU is emulated and several times "
                         "slower; use precision auto (fp32 here, bf16 on the GPU box)"))
    if t.precision == "fp16" and not cuda:
        out.append(Issue(ERROR, "training.precision", "fp16 mixed precision needs a CUDA GPU and there is "
                         "none; use precision auto"))

    # training.kernels: liger needs CUDA and the package.
    from tuitune.train.kernels import kernels_problem

    problem = kernels_problem(t.kernels, cuda)
    if problem:
        out.append(Issue(ERROR, "training.kernels", problem))

    # DeepSpeed installed?
    if d.deepspeed != "none":
        if importlib.util.find_spec("deepspeed") is None:
            out.append(Issue(ERROR, "distributed.deepspeed", f"{d.deepspeed} needs DeepSpeed, which is not "
                             "installed; pip install 'tuitune[deepspeed]' or set deepspeed: none"))
        elif not cuda:
            out.append(Issue(WARN, "distributed.deepspeed", "DeepSpeed needs CUDA GPUs; on this machine use "
                             "deepspeed: none (it is for the GPU box)"))

    # GPUs the machine has. Without CUDA, `gpus: N` starts N CPU processes (gloo): the multi-GPU
    # code path, for testing a launch before it goes to the GPU box.
    if not cuda and d.gpus > 1:
        out.append(Issue(WARN, "distributed.gpus", f"no GPU here: {d.gpus} CPU processes with gloo will run "
                         "(slow; for testing the multi-GPU set-up); use gpus: 1 for a real CPU run"))
    elif d.gpus > max(ngpus, 1):
        have = f"{ngpus} GPU(s)" if ngpus else "no GPU"
        out.append(Issue(ERROR, "distributed.gpus", f"{d.gpus} GPUs asked for but this machine has {have}; "
                         f"set gpus to {max(ngpus, 1)} or fewer (check CUDA_VISIBLE_DEVICES)"))
    if d.nnodes > 1 and d.master_addr in ("127.0.0.1", "localhost"):
        out.append(Issue(ERROR, "distributed.master_addr", f"{d.nnodes} nodes cannot meet at {d.master_addr}; "
                         "set master_addr to node 0's address that every node can reach"))
    return out


def check_notify(cfg: RunConfig) -> list[Issue]:
    """notify: a secrets file that is missing or readable by others, a ``${NAME}`` with no value here
    (a warning), a URL Apprise cannot read once its variables are filled in (``tuitune.notify``)."""
    if not cfg.notify.urls and not cfg.notify.secrets_file:
        return []
    from tuitune.notify import notify_problems, notify_settings

    s = notify_settings(cfg)
    return [Issue(level, field, msg) for level, field, msg in notify_problems(list(s.urls), s.secrets_file)]


def check_trackers(cfg: RunConfig) -> list[Issue]:
    """An error when a tracker of ``training.report_to`` is not installed (the rows of ``tuitune.train.tracking``)."""
    problem = trackers_problem(cfg.training.report_to)
    return [Issue(ERROR, "training.report_to", problem)] if problem else []


def _check_template(cfg: RunConfig) -> list[Issue]:
    """Evaluation prompts must render with the template and this model's tokenizer."""
    if cfg.task == "pretrain":
        return []  # plain text: no template involved
    if not cfg.model_is_local():
        return []
    p = cfg.resolve(cfg.model)
    if not (p / "config.json").is_file() or not any((p / f).is_file() for f in TOKENIZER_FILES):
        return []  # already reported by check_files
    if importlib.util.find_spec("tuitune.templates") is None:
        return []
    from tuitune.errors import TuituneError

    fix = "copy the tokenizer files from the base model (or set trust_remote_code if it needs it)"
    try:
        from tuitune.loading import prompt_tokenizer
        from tuitune.templates import render_prompt

        tok = prompt_tokenizer(p, trust_remote_code=cfg.trust_remote_code)
    except TuituneError as exc:  # the loader's line names the folder and the cause
        return [Issue(ERROR, "model", f"{exc}; {fix}")]
    except Exception as exc:
        return [Issue(ERROR, "model", f"the tokenizer in {p} does not load: {str(exc).splitlines()[0][:160]}; {fix}")]
    prompts = cfg.evaluation.prompts or ["hello"]
    for i, prompt in enumerate(prompts):
        messages = ([{"role": "system", "content": cfg.data.system}] if cfg.data.system else []) + [
            {"role": "user", "content": prompt}]
        try:
            render_prompt(tok, cfg.template, messages, add_generation_prompt=True)
        except TuituneError as exc:
            field = f"evaluation.prompts.{i}" if cfg.evaluation.prompts else "template"
            return [Issue(ERROR, field if cfg.evaluation.prompts else "template",
                          f"template {cfg.template!r} cannot render a prompt with this tokenizer: {exc}; "
                          "choose a named template instead of auto, or another model")]
    return []


def check_config(cfg: RunConfig, *, machine: bool = True, tokenizer: bool = True) -> list[Issue]:
    """Cross-field and environment checks, errors first. The schema is already valid here.

    ``machine`` probes torch, the GPUs, bitsandbytes, DeepSpeed and the trackers of
    ``training.report_to`` (seconds, once per process); ``tokenizer`` loads the model's
    tokenizer to render the evaluation prompts.
    """
    issues = check_files(cfg)
    if not any(i.level == ERROR for i in issues):
        issues += check_rewards(cfg)
    issues += check_notify(cfg)
    if machine:
        issues += _check_machine(cfg) + check_trackers(cfg)
    if tokenizer:
        issues += _check_template(cfg)
    for i in issues:
        if i.line is None:
            i.line = cfg.line_of(i.field)
    return sorted(issues, key=lambda i: i.level != ERROR)


def summary(cfg: RunConfig) -> str:
    """One line: method, effective batch, steps or epochs."""
    t, d = cfg.training, cfg.distributed
    length = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epochs"
    parts = f"{t.batch_size} batch × {t.grad_accum} accum × {d.gpus} GPU"
    if d.nnodes > 1:
        parts += f" × {d.nnodes} nodes"
    return f"{cfg.method} on {cfg.model}; effective batch {cfg.effective_batch_size} ({parts}); {length}"
