"""The one loader: a tokenizer (chat, eval, training, data inspect), the template check, and a model
for generation: the base and its adapters (several share one base). Errors are one line.

Light to import: torch, transformers and peft are imported inside the functions. Training's
trainable model (LoRA/QLoRA set-up on top of ``from_pretrained``) is built in ``tuitune.train.build``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from tuitune.errors import FIELD, TuituneError, first_line
from tuitune.generation import GENERATE_LOCK

DTYPES = ("auto", "fp32", "fp16", "bf16")
BITS = (4, 8)


class LoadedModel:
    """One model in memory, maybe carrying several named adapters (compare mode shares a base)."""

    def __init__(self, model, base: str, adapters: dict[str, Path], device: str, dtype: str, bits: int | None):
        self.model = model
        self.base = base
        self.adapters = adapters
        self.device = device
        self.dtype = dtype
        self.bits = bits

    @property
    def is_peft(self) -> bool:
        return bool(self.adapters)


def _torch_dtype(dtype: str):
    if dtype not in DTYPES:
        raise TuituneError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    if dtype == "auto":
        # The same pick as training's precision: auto (bf16 on GPUs and CPUs that compute it natively).
        from tuitune.hardware import auto_precision

        dtype = auto_precision()[0]
    from tuitune.hardware import torch_dtype

    return torch_dtype(dtype)


def load_model(base: str, adapters: dict[str, Path] | None = None, dtype: str = "auto", bits: int | None = None,
               trust_remote_code: bool = False, progress: Callable[[str], None] | None = None) -> LoadedModel:
    """Load ``base`` (and each named adapter on it) for generation; errors are one line."""
    adapters = dict(adapters or {})
    say = progress or (lambda _msg: None)
    if bits is not None and bits not in BITS:
        raise TuituneError(f"{FIELD} must be 4 or 8, got {bits}", field="bits")
    from tuitune.hardware import allow_bitsandbytes, keep_bitsandbytes_out
    from tuitune.cores import share_cores

    # bitsandbytes only for --bits: peft would import it anyway, and it prints noise on some CPUs.
    allow_bitsandbytes() if bits is not None else keep_bitsandbytes_out()
    share_cores(quiet_alone=True)  # on a CPU-only machine: this process's share of the cores (tuitune.cores)
    say("importing torch and transformers")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    cuda = torch.cuda.is_available()
    if bits is not None and not cuda:
        raise TuituneError(f"{FIELD} {bits} quantizes the weights with bitsandbytes, which needs a CUDA GPU, and "
                           f"this machine has none; drop {FIELD} to load the model unquantized", field="bits")
    torch_dtype = _torch_dtype(dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if bits is not None:
        from tuitune.hardware import bnb_config

        # 4-bit weights compute in the asked 16-bit type (fp16 where fp32 was asked: on a GPU).
        kwargs["quantization_config"] = bnb_config(bits, torch.float16 if torch_dtype == torch.float32 else torch_dtype)
        kwargs["device_map"] = {"": 0}
    elif cuda:
        kwargs["device_map"] = "auto"
    from transformers import AutoModelForCausalLM

    say(f"loading {Path(base).name}")
    try:
        model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    except TuituneError:
        raise
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, safetensors errors, ...
        raise TuituneError(f"{base}: the model could not be loaded ({first_line(exc)})") from None
    for i, (name, path) in enumerate(adapters.items()):
        say(f"applying adapter {path.name}")
        model = _apply_adapter(model, base, name, Path(path), first=i == 0)
    model.eval()
    say("warming up")
    _warm_up(model)
    device = str(getattr(model, "device", "cpu"))
    return LoadedModel(model, base, adapters, device, str(torch_dtype).removeprefix("torch."), bits)


def adapter_selector(model, is_peft: bool, name: str | None):
    """A context-manager factory that puts adapter ``name`` in use (None: the bare base) for one
    generation or forward pass; entered where the model runs (a generation thread, a loss batch).

    Compare mode enters and leaves it at every turn (generation/turns.py), so it does the
    least that switches: the tuner's ``disable_adapter_layers`` / ``enable_adapter_layers``
    for the base (peft's ``disable_adapter()`` also reads the whole model's status, twice the
    time: 50 ms on SmolLM2-135M), and ``set_adapter`` only when another adapter is in use.
    """
    from contextlib import contextmanager, nullcontext

    @contextmanager
    def bare_base():
        model.base_model.disable_adapter_layers()
        try:
            yield
        finally:
            model.base_model.enable_adapter_layers()

    def prepare():
        if is_peft and name is not None:
            if getattr(model, "active_adapter", None) != name:
                model.set_adapter(name)
            return nullcontext()
        return bare_base() if is_peft else nullcontext()
    return prepare


def can_share_base(adapters) -> bool:
    """Whether these adapters can sit on one copy of their base model.

    A second adapter that carries whole modules (``modules_to_save``, e.g. the embeddings
    and a tied ``lm_head``) does not come out right when peft's ``load_adapter`` adds it
    to a model that holds one already: on the tiny model its held-out loss read 6.93
    against 2.50 for the same adapter loaded alone. Such adapters get a copy of the
    base each; LoRA-only adapters share one.
    """
    paths = [Path(a) for a in adapters if a is not None]
    if len(paths) <= 1:
        return True
    for a in paths:
        try:
            if json.loads((a / "adapter_config.json").read_text(encoding="utf-8")).get("modules_to_save"):
                return False
        except (OSError, ValueError):
            return False
    return True


def _warm_up(model) -> None:
    """One tiny generation, so the first answer's time to first token is not the library's set-up."""
    import torch

    ids = torch.tensor([[model.generation_config.bos_token_id or 0] * 2], device=model.device)
    with GENERATE_LOCK, torch.inference_mode():
        try:
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False,
                           pad_token_id=ids[0, 0].item())
        except Exception:  # noqa: BLE001 - a model that can't do this will say so at the first answer
            pass


def _adapter_mismatch(adapter: Path, base: str, detail: str) -> TuituneError:
    trained_on = ""
    try:
        cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        if cfg.get("base_model_name_or_path"):
            trained_on = f" (it was trained on {cfg['base_model_name_or_path']})"
    except (OSError, ValueError):
        pass
    return TuituneError(f"adapter {adapter} does not fit model {base}{trained_on}: {detail}; "
                        "load it on the base model it was trained from")


def _apply_adapter(model, base: str, name: str, adapter: Path, first: bool):
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if first:
                model = PeftModel.from_pretrained(model, str(adapter), adapter_name=name, is_trainable=False)
            else:
                model.load_adapter(str(adapter), adapter_name=name, is_trainable=False)
        except Exception as exc:  # noqa: BLE001 - RuntimeError (size mismatch), ValueError (no such module)
            msg = str(exc)
            if "size mismatch" in msg:
                i = msg.find("size mismatch")
                detail = msg[i:].splitlines()[0][:240]
            else:
                detail = first_line(exc)
            raise _adapter_mismatch(adapter, base, detail) from None
    for w in caught:
        text = str(w.message)
        if "missing adapter keys" in text.lower() or "unexpected keys" in text.lower():
            raise _adapter_mismatch(adapter, base, text.splitlines()[0][:240])
    return model


def load_tokenizer(path, trust_remote_code: bool = False, *, pad: bool = False, fix: str = ""):
    """The tokenizer in ``path`` (a folder or a hub id); a failure is one line naming ``path``, with ``fix``
    after it. ``pad``: a tokenizer without a pad token pads with its EOS (training: padding is masked out)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, a missing tokenizer file, ...
        raise TuituneError(f"{path}: the tokenizer could not be loaded ({first_line(exc)})"
                           + (f"; {fix}" if fix else "")) from None
    if pad and tok.pad_token is None:
        # Many base models ship without a pad token.
        tok.pad_token = tok.eos_token
    return tok


def prompt_tokenizer(path, trust_remote_code: bool = False):
    """A tokenizer to render prompts with before any model is loaded (the config check, which
    `tuitune config check` and `tuitune train` run): :func:`load_tokenizer`'s, read without torch where
    the folder allows it.

    ``AutoTokenizer`` picks its class through transformers' configuration code, which imports
    torch: 3 to 4 s of a `tuitune config check` that otherwise takes 0.3 s. What a prompt renders
    from is the folder's chat template and special tokens, which transformers' generic
    ``TokenizersBackend`` reads from the same ``tokenizer.json`` and ``tokenizer_config.json``
    without torch. A folder without a ``tokenizer.json`` (sentencepiece only), one that needs
    remote code, or one the generic class cannot read goes through :func:`load_tokenizer`; the
    worker always does (tests/test_template_parity.py: both render alike).
    """
    folder = Path(str(path))
    if not trust_remote_code and (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file():
        try:
            from transformers import TokenizersBackend

            return TokenizersBackend.from_pretrained(str(folder))
        except Exception:  # noqa: BLE001 - the full loader below says what is wrong, in its words
            pass
    return load_tokenizer(path, trust_remote_code)


def check_template(tokenizer, template: str, where: str) -> str:
    """``template`` if it is a known name that this tokenizer can use (``auto`` needs the tokenizer's own
    chat template); else a one-line error naming ``where`` and the named templates."""
    from tuitune.templates import TEMPLATES, get_template

    get_template(template)  # unknown name: a one-line error listing them
    if template == "auto" and not getattr(tokenizer, "chat_template", None):
        raise TuituneError(f"{where}: the model has no chat template; choose a named template "
                           f"({FIELD}) from: {', '.join(TEMPLATES)}", field="template")
    return template


def context_length(model, tokenizer) -> int:
    """How many tokens the model takes: its positions, or the tokenizer's limit where smaller (2048 if neither says)."""
    cfg = model.config
    try:
        cfg = cfg.get_text_config()
    except Exception:  # noqa: BLE001
        pass
    n = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    tmax = getattr(tokenizer, "model_max_length", None)
    if isinstance(tmax, int) and 0 < tmax < 10**7:
        n = min(n, tmax) if n else tmax
    return int(n or 2048)
