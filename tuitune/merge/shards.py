"""Writing the merged weights: shard by shard through a window of the input's memory map, or by peft."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Callable

from tuitune.errors import TuituneError
from tuitune.fsutil import atomic_write_json
from tuitune.hardware import DTYPE_NAMES
from tuitune.merge.plan import Plan, Progress, delta, lora_scale
from tuitune.sources import ModelSource


def _shard_name(i: int, n: int) -> str:
    return "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"


_ST_SIZE = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
            "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_FLOAT = {"F64", "F32", "F16", "BF16"}


def _trim() -> None:
    """Hand freed tensor memory back to the OS between shards (glibc keeps it otherwise, and the
    peak would creep towards the model's size)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def return_big_frees() -> None:
    """Serve allocations of 1 MB and more with mmap from now on, so freeing one hands it back.

    glibc raises its mmap threshold after the first large free, and from then on serves large
    blocks from the heap, which it rarely shrinks: a forward pass that loads and frees each
    module's weights in turn would then keep them all, and the peak would grow to the model.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _reading(path: Path):
    """A damaged base shard is the user's problem to fix: say which file, in one line."""
    try:
        yield
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise TuituneError(f"{path}: cannot read ({type(exc).__name__}: {exc}); the base is damaged, "
                           "download it again") from None


@contextlib.contextmanager
def _writing(folder: Path):
    try:
        yield
    except OSError as exc:
        raise TuituneError(f"{folder}: cannot write ({exc.strerror or exc}); free some space or choose "
                           "another output folder; nothing was written") from None



class ShardReader:
    """``safe_open`` on one shard, reopened after every ``window`` bytes read.

    Reading a tensor touches its pages of the memory-mapped file, and those pages count in the
    process's resident memory until the file is unmapped; reopening unmaps them, so reading a
    2 GB shard costs about ``window`` of resident memory, not 2 GB.
    """

    def __init__(self, path: Path, window: int = 256 << 20):
        self.path, self.window, self.f, self.read = path, window, None, 0

    def get(self, key: str):
        from safetensors import safe_open

        if self.f is not None and self.read >= self.window:
            self.close()
        if self.f is None:
            self.f = safe_open(str(self.path), framework="pt").__enter__()
            self.read = 0
        t = self.f.get_tensor(key)   # a copy: the mapping may go right after
        self.read += t.numel() * t.element_size()
        return t

    def close(self) -> None:
        if self.f is not None:
            self.f.__exit__(None, None, None)
            self.f = None
            _trim()


class ShardWriter:
    """A safetensors file written one tensor at a time, in the order the header lists them.

    safetensors can only save a dict of tensors that are all in memory at once, which would
    hold a whole output shard; the format is simple (an 8-byte little-endian header length,
    the JSON header with each tensor's dtype, shape and byte offsets, then the raw bytes), so
    the header is written first from the plan and each tensor's bytes follow as it is merged,
    then freed. Tensors are laid out by element size, largest first (as safetensors itself
    does, so every tensor stays aligned); one that arrives before its turn waits in memory,
    which never happens when all of a shard's tensors have one dtype, as in every base model.
    """

    def __init__(self, path: Path, entries: list[tuple[str, str, list[int]]]):
        import struct

        entries = sorted(entries, key=lambda e: -_ST_SIZE.get(e[1], 4))   # stable: plan order otherwise
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for key, st, shape in entries:
            n = math.prod(shape) * _ST_SIZE.get(st, 4)
            header[key] = {"dtype": st, "shape": shape, "data_offsets": [offset, offset + n]}
            offset += n
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)   # the data starts 8-byte aligned
        self.path, self.size, self.order = path, offset, [e[0] for e in entries]
        self.expect = {k: header[k] for k in self.order}
        self.pending: dict[str, object] = {}
        self.next = 0
        self.fh = open(path, "wb")
        self.fh.write(struct.pack("<Q", len(raw)) + raw)

    def add(self, key: str, t) -> None:
        want = self.expect[key]
        if list(t.shape) != want["shape"]:
            raise RuntimeError(f"{key}: merged shape {list(t.shape)} is not the planned {want['shape']}")
        self.pending[key] = t
        while self.next < len(self.order) and self.order[self.next] in self.pending:
            k = self.order[self.next]
            self._write(k, self.pending.pop(k))
            self.next += 1

    def _write(self, key: str, t) -> None:
        import torch

        t = t.contiguous()
        # bytes of any dtype (bf16 has no numpy type): view the storage as uint8.
        data = t.view(torch.uint8) if t.element_size() == 1 else t.view(-1).view(torch.uint8)
        start, end = self.expect[key]["data_offsets"]
        if data.numel() != end - start:
            raise RuntimeError(f"{key}: {data.numel()} bytes, the header planned {end - start}")
        self.fh.write(data.numpy().tobytes() if data.numel() < (1 << 20) else memoryview(data.numpy()))

    def close(self) -> None:
        if self.fh is None:
            return
        if self.next != len(self.order):
            missing = [k for k in self.order[self.next:]][:3]
            self.fh.close()
            raise RuntimeError(f"{self.path.name}: tensors never written: {missing}")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        self.fh = None


def stream_merge(src: ModelSource, plan: Plan, tmp: Path, dtype: str, max_shard: int,
                 on_progress: Progress | None = None, cancelled: Callable[[], bool] | None = None) -> tuple[int, int, int]:
    """Write the merged shards and index into ``tmp``; returns (shards, tensors, bytes).

    The hand-written part: no library streams a LoRA merge shard by shard.
    """
    import torch

    acfg = plan.acfg  # type: ignore[attr-defined]
    out_t = getattr(torch, DTYPE_NAMES[dtype])
    out_size = _ST_SIZE[{"fp16": "F16", "bf16": "BF16", "fp32": "F32"}[dtype]]
    # Work out the output shards from the headers, so names and progress are known up front.
    order: list[tuple[str | None, str]] = [(s, k) for s in plan.shards for k in plan.keys_by_shard[s]]
    order += [(None, k) for k in plan.extra]
    nbytes = {}
    for shard, k in order:
        if shard is None:
            t = plan.extra[k]
            nbytes[k] = t.numel() * out_size
        else:
            n = math.prod(plan.shapes[k])
            st = plan.dtypes[k]
            nbytes[k] = n * (out_size if st in _FLOAT else _ST_SIZE.get(st, 4))
    groups: list[list[str]] = [[]]
    size = 0
    for _, k in order:
        if groups[-1] and size + nbytes[k] > max_shard:
            groups.append([])
            size = 0
        groups[-1].append(k)
        size += nbytes[k]
    n_out = len(groups)
    where = {k: i for i, g in enumerate(groups) for k in g}
    out_st = {"fp16": "F16", "bf16": "BF16", "fp32": "F32"}[dtype]

    def entry(k: str) -> tuple[str, list[int]]:
        if k in plan.extra:
            return out_st, list(plan.extra[k].shape)
        if k in plan.replace:
            return out_st, list(plan.replace[k].shape)
        st = plan.dtypes[k]
        return (out_st if st in _FLOAT else st), list(plan.shapes[k])

    total, done, written = len(order), 0, 0
    weight_map: dict[str, str] = {}
    writer: ShardWriter | None = None
    current = -1

    def open_shard(i: int) -> None:
        nonlocal writer, current, written
        if writer is not None:
            writer.close()
            written += writer.size
        current = i
        name = _shard_name(i + 1, n_out)
        for k in groups[i]:
            weight_map[k] = name
        writer = ShardWriter(tmp / name, [(k, *entry(k)) for k in groups[i]])

    def finish(k: str, t) -> None:
        nonlocal done
        if t.is_floating_point():
            t = t.to(out_t)
        while current < where[k]:
            open_shard(current + 1)
        writer.add(k, t)
        done += 1

    n_in = len(plan.shards) + (1 if plan.extra else 0)
    for i, shard in enumerate(plan.shards, 1):
        path = src.base_dir / shard
        reader = ShardReader(path)
        try:
            for k in plan.keys_by_shard[shard]:
                if cancelled and cancelled():
                    raise TuituneError("merge cancelled; nothing was written")
                t = plan.replace.get(k)
                if t is None:
                    with _reading(path):
                        t = reader.get(k)
                if k in plan.loras:
                    t = delta(plan.loras[k], acfg).add_(t)   # in place: one float32 copy, not two
                bias_of = k[: -len(".bias")] + ".weight" if k.endswith(".bias") else None
                if bias_of in plan.loras and plan.loras[bias_of].B_bias is not None:
                    lo = plan.loras[bias_of]
                    t = t.float() + lo.B_bias.float() * lora_scale(acfg, lo.module, lo.A.shape[0])
                with _writing(tmp):
                    finish(k, t)
                if on_progress:
                    on_progress(done, total, i, n_in)
        finally:
            reader.close()
            _trim()
    for k, t in plan.extra.items():
        with _writing(tmp):
            finish(k, t)
        if on_progress:
            on_progress(done, total, n_in, n_in)
    with _writing(tmp):
        while current < n_out - 1:   # (a group can only be empty when the model has no tensors)
            open_shard(current + 1)
        writer.close()
        written += writer.size
    if n_out > 1:
        atomic_write_json(tmp / "model.safetensors.index.json",
                          {"metadata": {"total_size": written}, "weight_map": dict(sorted(weight_map.items()))})
    return n_out, total, written


def peft_merge(src: ModelSource, tmp: Path, dtype: str, max_shard: int, on_progress: Progress | None = None) -> tuple[int, int, int]:
    """The fallback: the whole base in memory, peft's ``merge_and_unload``, ``save_pretrained``."""
    imports_ready()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    dt = getattr(torch, DTYPE_NAMES[dtype])
    if on_progress:
        on_progress(0, 1, 0, 1)
    model = AutoModelForCausalLM.from_pretrained(src.base_dir, dtype=dt)
    model = PeftModel.from_pretrained(model, src.adapter).merge_and_unload()
    model.save_pretrained(tmp, max_shard_size=max_shard)
    n = len(list(tmp.glob("*.safetensors")))
    size = sum(p.stat().st_size for p in tmp.glob("*.safetensors"))
    tensors = len(model.state_dict())
    del model
    if on_progress:
        on_progress(1, 1, 1, 1)
    return n, tensors, size


def quiet_transformers() -> None:
    """No loading bars or deprecation chatter in a merge's output."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", module="peft")


_WARMUP: list = []   # the warm-up thread, joined before the main thread touches transformers


def import_in_background(modules: tuple[str, ...] = ("accelerate.hooks", "peft", "transformers")) -> None:
    """Start importing what verification needs (transformers, peft: ~8 s here) while the merge runs.

    transformers' lazy module is not safe to import from two threads at once (a race there raised
    "cannot import name 'AutoTokenizer'"), so every use after this waits for the thread: ``imports_ready``.
    """
    import importlib
    import threading

    def work():
        for name in modules:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    thread = threading.Thread(target=work, name="tuitune-verify-imports", daemon=True)
    _WARMUP.append(thread)
    thread.start()


def imports_ready() -> None:
    """Wait for the warm-up imports, if any are running (see ``import_in_background``)."""
    while _WARMUP:
        _WARMUP.pop().join()
