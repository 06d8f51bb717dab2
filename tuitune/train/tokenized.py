"""Tokenized datasets cached in the workspace (``.cache/tokenized/<key>``), for every task's builder.

What is written by hand: the cache key (no library keys a cache on data file + tokenizer + template +
length + system prompt), the one preamble each task's builder starts with (:func:`cached_or_records`:
the file is there, the cache is read when it holds the key, else the records of the task's kind are
read), and the cache writer (whole or not at all).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from tuitune.errors import TuituneError
from tuitune.fsutil import sha256_of

#: Bump when the encoding changes, so cached datasets are rebuilt.
ENCODING_VERSION = "2"  # 2: packing best fit decreasing


def _tokenizer_digest(tokenizer) -> str:
    """A digest of what the tokenizer does: vocabulary, special tokens and chat template."""
    h = hashlib.sha256()
    h.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    h.update(json.dumps(tokenizer.all_special_tokens).encode())
    h.update(str(getattr(tokenizer, "chat_template", None)).encode())
    h.update(str(tokenizer.bos_token_id).encode() + str(tokenizer.eos_token_id).encode())
    return h.hexdigest()


def dataset_cache_key(cfg, path: Path, tokenizer, pack: bool) -> str:
    parts = [ENCODING_VERSION, sha256_of(path), _tokenizer_digest(tokenizer), cfg.template, cfg.task,
             str(cfg.data.max_length), str(pack), cfg.data.system or ""]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def cached_or_records(cfg, tokenizer, path: Path, *, pack: bool, cache_dir: Path, what: str, missing: str,
                      log=print):
    """``(dataset, None, target)`` when ``path`` is tokenized in the cache already, else
    ``(None, records, target)``: its records for ``cfg.task`` (never empty), to tokenize and save to
    ``target`` with :func:`save_cached`. ``what`` names the rows in the log line ("data", "pairs");
    ``missing`` is the fix said when the file is not there."""
    from tuitune.data.io import load_records

    path = Path(path)
    if not path.is_file():
        raise TuituneError(f"data: {path} does not exist; {missing}")
    target = Path(cache_dir) / dataset_cache_key(cfg, path, tokenizer, pack)
    if (target / "dataset_info.json").is_file():
        import datasets

        log(f"tokenized {what} from cache {target}")
        return datasets.load_from_disk(str(target)), None, target
    records = load_records(path, task=cfg.task)
    if not records:
        raise TuituneError(f"data: {path} has no records; check the file or convert it again")
    return None, records, target


def save_cached(ds, target: Path):
    """Write a tokenized dataset to the cache folder ``target`` (whole or not at all); read it back."""
    import datasets

    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp))
    try:
        os.replace(tmp, target)
    except OSError:  # another process cached the same data first
        shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(target))
