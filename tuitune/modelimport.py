"""A GGUF file → a Hugging Face model folder (``tuitune model import``).

The reading and dequantizing is transformers' own GGUF loader (``from_pretrained(...,
gguf_file=...)``, which needs the ``gguf`` package): it maps llama.cpp's tensor names and
metadata onto a transformers config, tokenizer (with the chat template the GGUF carries)
and weights. What transformers does not do is write that model back out: a GGUF-loaded
model refuses ``save_pretrained`` (its quantizer is not serializable), so the weights are
copied into a model built from the same config in the dtype asked for, and saved from there.

Before the folder appears, it is loaded back with plain ``AutoModelForCausalLM.from_pretrained``
and its logits on a chat-formatted prompt are compared with the GGUF-loaded model's (in
float32, both). fp32 must match exactly; bf16/fp16 within the rounding of that dtype, and
the greedy next token at almost every position must agree. Everything is written to
``OUT.partial-*`` beside ``OUT`` and renamed at the end.

A GGUF of a quantized checkpoint (Q4_1, say) dequantizes to a dense model that carries the
quantization error of the file; the folder is a real model of that (slightly lower) quality.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from tuitune.hardware import DTYPE_NAMES as _TORCH
from tuitune.errors import TuituneError

DTYPES = ("bf16", "fp16", "fp32")
#: Max |imported - gguf| / max(1, max |gguf|) of the logits, per dtype of the folder.
TOLERANCE = {"fp32": 1e-5, "bf16": 3e-2, "fp16": 1e-2}
#: Share of positions whose greedy token must agree (16-bit rounding may flip a near tie).
MIN_AGREEMENT = {"fp32": 1.0, "bf16": 0.9, "fp16": 0.95}
CHECK_PROMPT = "What is the capital of France? Answer in one sentence."
GGUF_MAGIC = b"GGUF"


@dataclass
class ImportResult:
    out: Path
    architecture: str
    model_type: str
    parameters: int
    dtype: str
    bytes: int
    max_diff: float
    tolerance: float
    agreement: float
    seconds: float

    def line(self) -> str:
        return (f"checked against the GGUF: max logit difference {self.max_diff:.3g} (tolerance "
                f"{self.tolerance:.3g}), greedy tokens agree at {100 * self.agreement:.0f}% of positions")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def gguf_architecture(path: Path) -> str:
    """The ``general.architecture`` of a GGUF file; a clear error when it is not one."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except IsADirectoryError:
        raise TuituneError(f"{path}: is a folder; give the .gguf file itself") from None
    except FileNotFoundError:
        raise TuituneError(f"{path}: no such file; give the path of a .gguf file") from None
    if magic != GGUF_MAGIC:
        raise TuituneError(f"{path}: not a GGUF file (it does not start with 'GGUF'); give a model file in "
                           "llama.cpp's GGUF format, or point tuitune at a Hugging Face model folder instead")
    try:
        from gguf import GGUFReader
    except ImportError:
        raise TuituneError("reading GGUF needs the gguf package: pip install gguf") from None
    try:
        reader = GGUFReader(str(path))
        field = reader.fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except KeyError:
        raise TuituneError(f"{path}: the GGUF has no general.architecture; the file is incomplete") from None
    except Exception as exc:  # a truncated or corrupt file
        raise TuituneError(f"{path}: cannot read the GGUF ({type(exc).__name__}: {exc}); the file may be "
                           "truncated: download it again") from None


def supported_architectures() -> list[str]:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    # The mapping's keys include two sections that are not architectures.
    return sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))


def check_supported(gguf: Path, arch: str) -> None:
    """transformers' own reading of the metadata decides (it knows the aliases, e.g. qwen2moe)."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        load_gguf_checkpoint(str(gguf), return_tensors=False)
    except ValueError as exc:
        if "not supported" not in str(exc):
            raise TuituneError(f"{gguf.name}: transformers could not read its metadata "
                               f"({str(exc).splitlines()[0][:200]})") from None
        raise TuituneError(f"{gguf.name}: architecture {arch!r} is not one transformers can read from GGUF; "
                           f"supported: {', '.join(supported_architectures())}") from None


def import_gguf(gguf: str | Path, out: str | Path, *, dtype: str = "bf16", force: bool = False,
                verify: bool = True, log: Callable[[str], None] | None = None) -> ImportResult:
    """Write the model in ``gguf`` as a Hugging Face folder ``out``; see the module docstring."""
    log = log or (lambda s: None)
    gguf = Path(gguf).expanduser().absolute()
    out = Path(out).expanduser().absolute()
    if dtype not in DTYPES:
        raise TuituneError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}")
    arch = gguf_architecture(gguf)
    from tuitune.fsutil import refuse_existing

    refuse_existing(out, force, folder=True)
    t0 = time.monotonic()
    log(f"{gguf.name}: architecture {arch}; loading with transformers' GGUF reader")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    check_supported(gguf, arch)
    from transformers import GgufConfig

    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        # dequantize=True: a dense float32 model, the reference the saved folder is checked against.
        ref = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32,
            quantization_config=GgufConfig(gguf_file=name, dequantize=True))
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise TuituneError(f"{gguf.name}: transformers could not read this GGUF "
                           f"({str(exc).splitlines()[0][:200]})") from None
    ref.eval()
    config = AutoConfig.for_model(**{k: v for k, v in ref.config.to_dict().items()
                                     if k not in ("quantization_config", "_name_or_path",
                                                  "_model_name_or_path", "transformers_version")})
    torch_dtype = getattr(torch, _TORCH[dtype])
    config.dtype = torch_dtype
    from tuitune.fsutil import fix_modes, make_temp_dir

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(prefix=f"{out.name}.partial-", dir=out.parent)
    try:
        log(f"saving {sum(p.numel() for p in ref.parameters()):,} parameters as {dtype} safetensors")
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        # assign=True takes the tensors as they are (cast to the model's dtype below), with no second
        # allocation of random weights first.
        state = {k: v.to(torch_dtype) for k, v in ref.state_dict().items()}
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
        missing = [k for k in missing if not _tied(model, k)]
        if missing or unexpected:
            raise TuituneError(f"{gguf.name}: the GGUF's weights do not fill a {type(model).__name__} "
                               f"(missing {missing[:3]}, unexpected {unexpected[:3]}); report the file's name")
        model.tie_weights()
        model.generation_config = _generation_config(ref, tokenizer)
        # save_pretrained imports deepspeed where it is installed, which prints a banner on stdout;
        # stdout is the command's result (--json), so library output goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            model.save_pretrained(tmp, safe_serialization=True)
        del model, state
        tokenizer.save_pretrained(tmp)
        _clean_config(tmp / "config.json")
        max_diff, tol, agreement = (0.0, TOLERANCE[dtype], 1.0)
        if verify:
            log("checking: logits of the saved folder vs the GGUF-loaded model")
            max_diff, tol, agreement = _verify(ref, tokenizer, tmp, dtype)
            if max_diff > tol or agreement < MIN_AGREEMENT[dtype]:
                raise TuituneError(
                    f"{gguf.name}: the saved folder's logits differ from the GGUF's (max difference "
                    f"{max_diff:.3g} > {tol:.3g}, or greedy tokens agree at only {100 * agreement:.0f}%); "
                    "nothing was written: try --dtype fp32, and report the file's name")
        size = sum(p.stat().st_size for p in tmp.rglob("*.safetensors"))
        result = ImportResult(out=out, architecture=arch, model_type=config.model_type,
                              parameters=sum(p.numel() for p in ref.parameters()), dtype=dtype, bytes=size,
                              max_diff=max_diff, tolerance=tol, agreement=agreement,
                              seconds=time.monotonic() - t0)
        _write_card(tmp, gguf, result)
        fix_modes(tmp)  # safetensors writes its shards 0600
        from tuitune.fsutil import publish_dir

        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _tied(model, key: str) -> bool:
    """``lm_head.weight`` of a tied model is the embedding: the GGUF stores it once."""
    return key.endswith("lm_head.weight") and bool(getattr(model.config, "tie_word_embeddings", False))


def _generation_config(ref, tokenizer):
    """The GGUF's generation settings, stopping on the chat template's end-of-turn token too."""
    gen = ref.generation_config
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    eos = [e for e in eos if e is not None]
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        if tid is not None and tid not in eos and token in (tokenizer.chat_template or "") + str(tokenizer.eos_token):
            eos.append(tid)
    gen.eos_token_id = eos[0] if len(eos) == 1 else eos
    if gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    return gen


def _clean_config(path: Path) -> None:
    """No GGUF quantization entry in config.json: the folder holds plain dense weights."""
    from tuitune.fsutil import atomic_write_json

    cfg = json.loads(path.read_text())
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        cfg.pop(key, None)
    atomic_write_json(path, cfg)


def _verify(ref, tokenizer, folder: Path, dtype: str) -> tuple[float, float, float]:
    import torch
    from transformers import AutoModelForCausalLM

    messages = [{"role": "user", "content": CHECK_PROMPT}]
    if tokenizer.chat_template:
        enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        ids = enc["input_ids"]
    else:
        ids = tokenizer(CHECK_PROMPT, return_tensors="pt")["input_ids"]
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    loaded.eval()
    with torch.no_grad():
        a = ref(input_ids=ids).logits.float()
        b = loaded(input_ids=ids).logits.float()
    del loaded
    scale = max(1.0, a.abs().max().item())
    diff = (a - b).abs().max().item() / scale
    agreement = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    return diff, TOLERANCE[dtype], agreement


def _write_card(tmp: Path, gguf: Path, result: ImportResult) -> None:
    from tuitune.fsutil import atomic_write_json, atomic_write_text

    atomic_write_json(tmp / "tuitune-import.json", {"gguf": str(gguf), **result.to_dict()})
    atomic_write_text(tmp / "README.md", (
        f"# {tmp.name.split('.partial-')[0]}\n\n"
        f"Imported by `tuitune model import` from `{gguf.name}` (architecture `{result.architecture}`, "
        f"model type `{result.model_type}`, {result.parameters:,} parameters), saved as {result.dtype} "
        "safetensors.\n\n"
        "The GGUF's weights were dequantized by transformers' GGUF loader. Where the file was quantized "
        "(Q4, Q8, ...), this is a real model of slightly lower quality than the original checkpoint.\n\n"
        f"- {result.line()}\n"))
