"""From a run config to a ready ``transformers.Trainer``: tokenizer, model, data, collator.

Training runs on transformers' Trainer (with accelerate and DeepSpeed underneath) and
peft for adapters; this module only wires the config into them (the tokenized-dataset
cache is :mod:`tuitune.train.tokenized`). What is written by hand: a padding collator
that keeps per-sample ``position_ids`` of packed rows (transformers'
DataCollatorWithFlattening needs flash-attention; ours pads, which works with every
attention implementation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuitune.data.records import PROMPT_TASKS, with_system
from tuitune.errors import TuituneError
from tuitune.train.tokenized import cached_or_records, save_cached


def load_tokenizer(cfg):
    """The run's tokenizer (the one loader), padding with its EOS where it has no pad token."""
    from tuitune.loading import load_tokenizer as load

    return load(cfg.model_path(), cfg.trust_remote_code, pad=True)


def check_model_folder(cfg) -> None:
    if cfg.model_is_local():
        path = Path(cfg.model_path())
        if not (path / "config.json").is_file():
            raise TuituneError(f"model: {path} is not a model folder (no config.json); "
                               "point `model:` at a folder saved with save_pretrained, or a hub id")


def build_dataset(cfg, tokenizer, path: Path, *, pack: bool, cache_dir: Path, log=print):
    """Tokenize ``path`` with the config's template (cached by content), optionally packed."""
    from datasets import Dataset

    from tuitune.encode import encode_conversation

    path = Path(path)
    cached, records, target = cached_or_records(
        cfg, tokenizer, path, pack=pack, cache_dir=cache_dir, what="data", log=log,
        missing="convert your data with `tuitune data convert` and point data.train at the .jsonl it writes")
    if cached is not None:
        return cached
    template, max_length, task, system = cfg.template, cfg.data.max_length, cfg.task, cfg.data.system

    def encode(batch):
        out = {"input_ids": [], "labels": []}
        for conv in batch["conversation"]:
            enc = encode_conversation(tokenizer, with_system({"conversation": conv}, system), template,
                                      max_length, task=task)
            out["input_ids"].append(enc["input_ids"])
            out["labels"].append(enc["labels"])
        return out

    raw = Dataset.from_dict({"conversation": [r["conversation"] for r in records]})
    ds = raw.map(encode, batched=True, remove_columns=["conversation"], desc=f"tokenizing {path.name}")
    usable = ds.filter(lambda ex: any(l != -100 for l in ex["labels"]), desc="dropping untrainable records")
    if len(usable) == 0:
        raise TuituneError(f"data: no record of {path} has a trainable token after the template and "
                           f"max_length {max_length}; check that the outputs are not empty")
    if len(usable) < len(ds):
        log(f"{len(ds) - len(usable)} records of {path.name} have nothing to train after truncation; skipped")
    ds = usable
    if pack:
        ds = pack_dataset(ds, max_length)
    return save_cached(ds, target)


def mix_indices(n: int, weight: float | None, max_records: int | None, seed: int) -> list[int]:
    """Which of a source's ``n`` records a mix takes, in file order: at most ``max_records`` of them
    (a seeded sample), then each ``weight`` times (2: twice; 0.5: a seeded half; 1.5: all once and a
    seeded half again)."""
    import random

    rng = random.Random(seed)
    base = list(range(n))
    if max_records is not None and max_records < n:
        base = sorted(rng.sample(base, max_records))
    w = 1.0 if weight is None else weight
    whole, part = int(w), w - int(w)
    out = base * whole
    extra = round(part * len(base))
    if extra:
        out += sorted(rng.sample(base, extra))
    return out


def count_tokens(ds) -> int:
    """Tokens in a tokenized dataset (a pair counts its prompt and both answers), from the Arrow columns."""
    import pyarrow.compute as pc

    cols = [c for c in ("input_ids", "prompt_ids", "chosen_ids", "rejected_ids") if c in ds.column_names]
    total = 0
    for batch in ds.with_format("arrow").iter(batch_size=10_000):
        for c in cols:
            total += pc.sum(pc.list_value_length(batch[c])).as_py() or 0
    return total


@dataclass
class MixRow:
    """One source of a training mix: its records, how many the mix takes, their tokens."""

    path: str
    records: int
    used: int
    tokens: int
    share: float = 0.0      # of the mix's records

    def line(self) -> str:
        return (f"{self.path}: {self.used} of {self.records} records ({self.share:.0%} of the mix), "
                f"{self.tokens:,} tokens")


def mix_parts(cfg, build_one) -> tuple[list, list[MixRow]]:
    """Each source tokenized (and cached) on its own by ``build_one(path)``, and the records the mix
    takes of it (``weight``/``max_records``)."""
    parts, rows = [], []
    for i, src in enumerate(cfg.data.sources()):
        ds = build_one(cfg.resolve(src.path))
        idx = mix_indices(len(ds), src.weight, src.max_records, cfg.training.seed + i)
        if not idx:
            raise TuituneError(f"data.train entry {i + 1} ({src.path}): its weight {src.weight:g} takes none of "
                               f"its {len(ds)} records; raise the weight or leave the file out")
        part = ds.select(idx)
        parts.append(part)
        rows.append(MixRow(src.path, len(ds), len(idx), count_tokens(part)))
    total = sum(r.used for r in rows) or 1
    for r in rows:
        r.share = r.used / total
    return parts, rows


def build_mix(cfg, build_one, *, log=print):
    """The training mix: :func:`mix_parts`, shuffled together with the run's seed (a seeded
    interleave), then packed when ``data.pack``. Adding a file leaves the others' caches as they are."""
    from datasets import concatenate_datasets

    parts, rows = mix_parts(cfg, build_one)
    for r in rows:
        log(f"mix: {r.line()}")
    mixed = concatenate_datasets(parts).shuffle(seed=cfg.training.seed).flatten_indices()
    if cfg.data.pack and not cfg.is_preference:
        mixed = pack_dataset(mixed, cfg.data.max_length)
    return mixed


def dataset_builder(cfg, tokenizer, *, log=print):
    """``build(path, pack)``: one file tokenized for ``cfg``'s task, cached in the workspace."""
    cache_dir = Path(cfg.workspace) / ".cache" / "tokenized"
    if cfg.task in PROMPT_TASKS:   # prompts, with their ids for the counts (the trainer takes them from the text)
        from tuitune.train.grpo import build_prompt_dataset

        def build_prompts(path, pack):
            ds, ids = build_prompt_dataset(cfg, tokenizer, path, log=log)
            return ds.add_column("prompt_ids", [ids[p] for p in ds["prompt"]])
        return build_prompts
    if cfg.is_preference:
        from tuitune.train.preference_trainer import build_preference_dataset as build_pairs

        return lambda path, pack: build_pairs(cfg, tokenizer, path, cache_dir=cache_dir, log=log)
    return lambda path, pack: build_dataset(cfg, tokenizer, path, pack=pack, cache_dir=cache_dir, log=log)


def describe_mix(cfg, tokenizer=None, *, log=lambda _m: None) -> list[MixRow]:
    """What the run's data is: records and tokens per source (tokenizing each file into the cache the
    run then reuses). The Config and Data steps show it."""
    import datasets

    tokenizer = tokenizer or load_tokenizer(cfg)
    build = dataset_builder(cfg, tokenizer, log=log)
    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()   # a check's output, or a screen's: no tqdm bars on stderr
    try:
        return mix_parts(cfg, lambda path: build(path, False))[1]
    finally:
        if shown:
            datasets.enable_progress_bars()


def pack_dataset(ds, max_length: int, chunk_rows: int = 4096):
    """Pack a tokenized dataset into rows of ``max_length`` (best fit decreasing).

    Reads the lengths from the Arrow column and the samples row by row in packed order, and
    builds the result a chunk at a time, so peak memory is one chunk of Python lists plus
    the Arrow tables, not the whole dataset as lists.
    """
    import pyarrow.compute as pc
    from datasets import Dataset, concatenate_datasets

    from tuitune.encode import pack_bins, pack_row

    lengths: list[int] = []
    for batch in ds.with_format("arrow").iter(batch_size=10_000):  # respects filter()'s index mapping
        lengths += pc.list_value_length(batch["input_ids"]).to_pylist()
    bins = pack_bins(lengths, max_length)
    chunks = []
    for start in range(0, len(bins), chunk_rows):
        part = bins[start:start + chunk_rows]
        picked = ds.select([i for b in part for i in b])
        it = iter(picked)
        rows = [pack_row([next(it) for _ in b], max_length) for b in part]
        chunks.append(Dataset.from_list(rows))
    return concatenate_datasets(chunks) if len(chunks) > 1 else chunks[0]


def model_max_positions(model_dir: str, trust_remote_code: bool) -> int | None:
    from transformers import AutoConfig

    conf = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    conf = getattr(conf, "text_config", None) or conf
    return getattr(conf, "max_position_embeddings", None)


def load_model(cfg, log=print):
    """The model to train: full weights, or a peft model (LoRA on 16-bit, QLoRA on 4/8-bit)."""
    from transformers import AutoModelForCausalLM

    from tuitune.config import to_lora_config, to_model_kwargs

    kwargs = to_model_kwargs(cfg)
    quant = kwargs.get("quantization_config")
    if quant is None:
        kwargs.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_pretrained(**kwargs)
    model.config.use_cache = False  # no KV cache while training (and with checkpointing)
    if cfg.method == "full":
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if cfg.method == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=cfg.training.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.training.gradient_checkpointing:
        # Checkpointed layers need an input that requires grad when the embeddings are frozen.
        model.enable_input_require_grads()
    model = get_peft_model(model, to_lora_config(cfg))
    base_dtype = kwargs["dtype"]
    if upcast_trainable(model) and cfg.method == "lora":
        bridge_dtypes(model, base_dtype)
    trainable, total = model.get_nb_trainable_parameters()
    log(f"{cfg.method}: {trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)")
    return model


def upcast_trainable(model) -> int:
    """Hold every trainable weight in fp32 on a 16-bit base; returns how many were cast.

    The frozen base stays 16-bit (half the memory, and fast matmuls where the hardware has
    them); what the optimizer updates must be fp32: a bf16 weight cannot take an update
    smaller than 1/256 of itself, so small learning-rate steps vanish, and fp16 loss scaling
    refuses fp16 gradients. peft already upcasts LoRA's A/B (``autocast_adapter_dtype``), but
    not the ``modules_to_save`` copies (embed_tokens, lm_head), which are copies of 16-bit base
    modules. Assigning ``.data`` keeps each Parameter object, so a weight tied between two
    modules (embed_tokens and lm_head with ``ensure_weight_tying``) stays one weight.
    """
    import torch

    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()
            cast += 1
    return cast


def bridge_dtypes(model, base_dtype) -> None:
    """Let fp32 ``modules_to_save`` sit in a 16-bit base: their inputs are cast to fp32, their
    outputs back to the base's dtype (the output head's logits stay fp32, for the loss).

    Without it, the fp32 embeddings' output meets bf16 weights in the first attention matmul,
    which torch refuses outside autocast: in training on a CPU (no autocast there), and in the
    sample answers the callback generates everywhere. peft does the same cast inside its LoRA
    layers (input to the adapter's dtype, result back), but not around modules_to_save.
    """
    import torch

    try:
        from peft.utils.other import ModulesToSaveWrapper
    except ImportError:  # an older peft: modules_to_save wrappers live elsewhere; leave them
        return
    head = model.get_output_embeddings()

    def to_fp32(_module, args, kwargs):
        cast = lambda t: t.float() if torch.is_tensor(t) and t.is_floating_point() else t  # noqa: E731
        return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}

    def to_base(_module, _args, _kwargs, out):
        return out.to(base_dtype) if torch.is_tensor(out) and out.is_floating_point() else out

    for module in model.modules():
        if isinstance(module, ModulesToSaveWrapper):
            module.register_forward_pre_hook(to_fp32, with_kwargs=True)
            if module is not head and getattr(module, "original_module", None) is not head:
                module.register_forward_hook(to_base, with_kwargs=True)


def steps_per_epoch(n_rows: int, cfg) -> int:
    world = cfg.distributed.gpus * cfg.distributed.nnodes
    batches = math.ceil(n_rows / (cfg.training.batch_size * world))
    return max(1, batches // cfg.training.grad_accum)


def build_trainer(cfg, run, *, callbacks=(), log=print) -> Any:
    """A ``transformers.Trainer`` for the run folder ``run`` (a RunFolder)."""
    from tuitune.config import to_training_arguments

    check_model_folder(cfg)
    tokenizer = load_tokenizer(cfg)
    max_pos = model_max_positions(cfg.model_path(), cfg.trust_remote_code)
    if max_pos and cfg.data.max_length > max_pos:
        raise TuituneError(f"data.max_length {cfg.data.max_length} is beyond what {cfg.model} supports "
                           f"({max_pos} positions); set data.max_length to {max_pos} or less")
    train_ds = eval_ds = None
    if cfg.task not in PROMPT_TASKS:   # GRPO's prompts are read by its own builder (train/grpo.py)
        build = dataset_builder(cfg, tokenizer, log=log)
        train_ds = build_mix(cfg, lambda path: build(path, False), log=log) if len(cfg.data.sources()) > 1 \
            else build(cfg.resolve(cfg.data.first_train), cfg.data.pack)
        if cfg.data.eval and cfg.evaluation.eval_loss:
            eval_ds = build(cfg.resolve(cfg.data.eval), False)
    # Seed before the model is built: LoRA's A matrices are drawn at random when the adapter is
    # added, and the Trainer only seeds later. Same seed, same run.
    from transformers import set_seed

    set_seed(cfg.training.seed)
    model = load_model(cfg, log=log)
    # tokens/s in the events counts real (non-padding) tokens.
    args = to_training_arguments(cfg, run.checkpoints, include_num_input_tokens_seen="non_padding")
    from tuitune.templates import to_jinja

    # What leaves the run (every checkpoint, the final adapter, a merged model) carries the format it
    # trained on: a named template becomes the tokenizer's chat_template, with the run's system prompt.
    tokenizer.chat_template = to_jinja(tokenizer, cfg.template, cfg.data.system) or tokenizer.chat_template
    if cfg.is_preference:
        from tuitune.train.preference_trainer import make_trainer, preference_arguments

        trainer = make_trainer(cfg, model=model, args=preference_arguments(cfg, args), train_dataset=train_ds,
                               eval_dataset=eval_ds, tokenizer=tokenizer, callbacks=callbacks)
        return trainer, tokenizer
    if cfg.task in PROMPT_TASKS:
        from tuitune.train.grpo import build_grpo

        return build_grpo(cfg, model, args, tokenizer, callbacks, log=log), tokenizer
    from tuitune.train.trainer import BatchCollator, TuituneTrainer, flattens

    flat = flattens(model, cfg.data.max_length)
    collator = BatchCollator(tokenizer.pad_token_id, flatten=flat)
    if (flat or cfg.data.pack) and getattr(getattr(model, "config", None), "_attn_implementation", None) == "sdpa":
        # Rows holding several samples, on sdpa: attend within each sample only, skipping the
        # masked blocks.
        from tuitune.train.attention import install

        install()
    if flat:
        log("batches: samples end to end in one row, no padding (attention per sample)")
    trainer = TuituneTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                             data_collator=collator, processing_class=tokenizer, callbacks=list(callbacks),
                             kernels=cfg.training.kernels)
    if trainer.chunked_loss:
        log("loss: the head and cross-entropy in chunks of positions (training.kernels), no full logits")
    return trainer, tokenizer
