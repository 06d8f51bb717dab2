"""llama.cpp's side of an export: its converter (found or fetched once) and the GGUF read back.

The GGUF is written by llama.cpp's own converter, ``convert_hf_to_gguf.py``, never by code here:
from a llama.cpp checkout (``--llama-cpp DIR`` or ``LLAMA_CPP_DIR``), else from the
``llama-cpp-python`` source package, which vendors llama.cpp with the converter and its
``gguf-py`` (downloaded with ``pip download --no-deps``, pinned, unpacked once into the cache;
its compiled parts are never built). The file is then read back with the ``gguf`` package and
checked against the source: architecture, tensor count, tokenizer, and the chat template (which
training saved in the tokenizer, so the served model renders the format it was trained on).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from tuitune.errors import TuituneError

#: The GGUF tensor types an export offers (``--type``).
OUTTYPES = ("f16", "bf16", "q8_0")
#: The llama-cpp-python source package whose vendored llama.cpp provides the converter.
LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"


# --- the converter ------------------------------------------------------------------------------

def find_converter(llama_cpp: str | Path | None = None, log: Callable[[str], None] = lambda s: None) -> Path:
    """The folder holding ``convert_hf_to_gguf.py`` and ``gguf-py``; TuituneError saying what was tried."""
    tried = []
    given = llama_cpp or os.environ.get("LLAMA_CPP_DIR")
    if given:
        d = Path(given).expanduser().absolute()  # the converter runs in its own folder
        if (d / "convert_hf_to_gguf.py").is_file():
            return d
        tried.append(f"{d} (no convert_hf_to_gguf.py there)")
    else:
        tried.append("--llama-cpp / LLAMA_CPP_DIR (not given)")
    name = LLAMA_CPP_PYTHON.replace("==", "-")
    from tuitune.sample import cache_root

    d = cache_root() / "llama.cpp" / name
    if (d / "convert_hf_to_gguf.py").is_file():
        return d
    try:
        _unpack_converter(d, log)
        return d
    except TuituneError as exc:
        tried.append(f"`pip download --no-deps {LLAMA_CPP_PYTHON}` ({exc})")
    raise TuituneError(f"no GGUF converter: tried {'; '.join(tried)}; give --llama-cpp DIR (a llama.cpp "
                       "checkout, which has convert_hf_to_gguf.py)")


def _unpack_converter(dest: Path, log) -> None:
    import tarfile
    import tempfile

    log(f"fetching llama.cpp's converter: pip download --no-deps {LLAMA_CPP_PYTHON}")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               LLAMA_CPP_PYTHON, "-d", tmp, "-q"], capture_output=True, text=True, timeout=600)
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if proc.returncode != 0 or not archives:
            last = (proc.stderr.strip().splitlines() or ["no archive"])[-1][:200]
            raise TuituneError(last)
        staging = dest.with_name(f".{dest.name}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        with tarfile.open(archives[0]) as tar:
            root = tar.getnames()[0].split("/")[0] + "/vendor/llama.cpp/"
            keep = [m for m in tar.getmembers() if m.name.startswith(root) and (
                m.name == root + "convert_hf_to_gguf.py" or m.name.startswith((root + "gguf-py/", root + "conversion/")))]
            for m in keep:
                m.name = m.name[len(root):]
            tar.extractall(staging, members=keep, filter="data")
        if not (staging / "convert_hf_to_gguf.py").is_file():
            raise TuituneError("the package holds no vendor/llama.cpp/convert_hf_to_gguf.py")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, dest)


def convert(converter: Path, model_dir: Path, outfile: Path, outtype: str, label: str) -> None:
    """Run ``convert_hf_to_gguf.py`` on ``model_dir`` into ``outfile``; TuituneError naming ``label``."""
    # The converter runs in its own folder (cwd), so every path it is given is absolute.
    converter, model_dir, outfile = converter.absolute(), model_dir.absolute(), outfile.absolute()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(converter / "gguf-py"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(converter / "convert_hf_to_gguf.py"), str(model_dir), "--outfile",
                           str(outfile), "--outtype", outtype], capture_output=True, text=True, env=env, cwd=converter)
    if proc.returncode == 0 and outfile.is_file():
        return
    lines = [l for l in (proc.stderr + proc.stdout).splitlines() if l.strip() and not l.startswith("INFO")]
    last = next((l for l in reversed(lines) if "Error" in l or "error" in l), lines[-1] if lines else "no output")
    if "not supported" in last or "NotImplementedError" in last:
        raise TuituneError(f"{label}: llama.cpp's converter cannot convert this model ({last.strip()[:240]}); "
                           "it knows the architectures and tokenizers llama.cpp runs (llama, qwen2, mistral, gemma, "
                           "phi3, ...): export such a model (the real demo's: tuitune demo --real), or serve this one "
                           "from the merged safetensors")
    raise TuituneError(f"{label}: llama.cpp's converter failed ({last.strip()[:240]})")


# --- reading the GGUF back ----------------------------------------------------------------------

def _field(reader, name: str):
    f = reader.fields.get(name)
    if f is None or not f.data:
        return None
    v = f.parts[f.data[0]]
    try:
        return bytes(v).decode("utf-8")
    except (TypeError, ValueError):
        return v.tolist()


def adds_bos(path: Path) -> bool:
    """Whether llama.cpp (and Ollama, which runs it) puts a BOS before a prompt it tokenizes: the
    GGUF's ``tokenizer.ggml.add_bos_token``, else llama.cpp's default for the vocabulary (SentencePiece
    and WordPiece add one, byte-level BPE and Unigram do not)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    f = reader.fields.get("tokenizer.ggml.add_bos_token")
    if f is not None and f.data:
        return bool(f.parts[f.data[0]][0])
    return _field(reader, "tokenizer.ggml.model") in ("llama", "bert")


def check_gguf(path: Path, model_dir: Path) -> tuple[str, int, list[str]]:
    """(architecture, tensors, the checks passed); TuituneError naming the first that fails."""
    import json

    from gguf import GGUFReader
    from safetensors import safe_open
    from transformers import AutoTokenizer

    reader = GGUFReader(str(path))
    arch = _field(reader, "general.architecture") or ""
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    src_tensors = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), "pt") as h:
            src_tensors += len(list(h.keys()))
    checks = []
    if not arch:
        raise TuituneError(f"{path}: no general.architecture; the converter wrote an incomplete file")
    checks.append(f"architecture {arch} (model_type {cfg.get('model_type')})")
    n = len(reader.tensors)
    # The converter may drop a tied lm_head or add rope tables; anything else means lost weights.
    if abs(n - src_tensors) > 2:
        raise TuituneError(f"{path}: {n} tensors against {src_tensors} in {model_dir}; the conversion lost weights")
    checks.append(f"{n} tensors ({src_tensors} in the source)")
    tok_model = _field(reader, "tokenizer.ggml.model")
    if not tok_model:
        raise TuituneError(f"{path}: no tokenizer in the file")
    checks.append(f"tokenizer {tok_model}")
    want = AutoTokenizer.from_pretrained(model_dir).chat_template
    got = _field(reader, "tokenizer.chat_template")
    if want and got != want:
        raise TuituneError(f"{path}: tokenizer.chat_template differs from {model_dir}'s; the served model would "
                           "render another format than training used")
    checks.append("chat template as trained" if want else "no chat template in the source")
    return arch, n, checks


__all__ = ["find_converter", "convert", "check_gguf", "adds_bos", "OUTTYPES", "LLAMA_CPP_PYTHON"]
