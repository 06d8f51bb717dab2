"""A chat session: load a model (or base + adapter, a run, a run's checkpoint), stream answers.

Headless (no textual). Heavy modules (torch, transformers, peft) are imported inside
the functions that need them, so ``import tuitune.chat`` stays light.

What can be loaded (:func:`resolve_source`):

- a model folder (``config.json``): a base model, a merged model or a full fine-tune;
- an adapter folder (``adapter_config.json``): on the base named by the run it sits
  in, else by its ``base_model_name_or_path``; or a model folder plus ``adapter=``;
- a run id (or a unique part of it, or its folder): its final ``adapter/`` (or
  ``model/``), on the base model of its ``config.yaml``; a run still training has no
  final adapter yet, so its latest complete checkpoint is used (and a note says so);
- ``RUN:checkpoint-N`` or ``RUN:N``: that checkpoint of the run; ``RUN:base``: the
  run's base model alone.

Generation: the prompt is rendered with the model's template (``auto``: the
tokenizer's own, or a named one), the run's when a run is loaded. Tokens are
generated in a thread and streamed back as text; the seed is set right before each
answer, under a process-wide lock, so the same seed, settings, model and prompt give
the same answer whatever ran before. A multi-turn history is kept and trimmed from
the oldest turn when prompt + ``max_new_tokens`` would pass the model's context.
Each answer records time to first token and tokens per second (:class:`Stats`).
"""

from __future__ import annotations

import gc
import json
import math
import random
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from tuitune.errors import TuituneError

DTYPES = ("auto", "fp32", "fp16", "bf16")
BITS = (4, 8)

# One generation at a time in this process: the seed lives in torch's global RNG,
# which every thread shares, so two interleaved generations would disturb each other.
_GENERATE_LOCK = threading.Lock()


# --- settings ------------------------------------------------------------------------------------

@dataclass
class GenerationSettings:
    """Generation controls. ``temperature`` 0 means greedy (top-p and top-k then do nothing)."""

    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    repetition_penalty: float = 1.0
    max_new_tokens: int = 512
    seed: int | None = 0          # None: a fresh random seed for each answer (recorded in Stats)
    system: str = ""
    stop: tuple[str, ...] = ()    # the user's stop words, on top of the template's

    def __post_init__(self):
        self.stop = tuple(self.stop or ())

    def validate(self) -> "GenerationSettings":
        """Raise TuituneError naming the field and the allowed range; return self."""
        t = self.temperature
        if not _is_number(t) or t < 0:
            raise TuituneError(f"temperature must be 0 or more (0 means greedy), got {t!r}")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise TuituneError(f"top_p must be above 0 and at most 1, got {self.top_p!r}")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise TuituneError(f"top_k must be a whole number, 0 or more (0 turns it off), got {self.top_k!r}")
        if not _is_number(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise TuituneError(f"repetition_penalty must be above 0 (1 turns it off), got {self.repetition_penalty!r}")
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise TuituneError(f"max_new_tokens must be a whole number, 1 or more, got {self.max_new_tokens!r}")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < 2**32):
            raise TuituneError(f"seed must be a whole number from 0 to {2**32 - 1}, or none, got {self.seed!r}")
        if not isinstance(self.system, str):
            raise TuituneError("system must be text")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def updated(self, name: str, value: Any) -> "GenerationSettings":
        """A validated copy with one field set; ``value`` may be text (from ``/set`` or a form field)."""
        key = SETTING_ALIASES.get(name.strip().lower().replace("-", "_"), None)
        if key is None:
            raise TuituneError(f"unknown setting {name!r}; settings: {', '.join(SETTING_NAMES)}")
        return replace(self, **{key: parse_setting(key, value)}).validate()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


SETTING_NAMES = ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "seed", "system", "stop")
SETTING_ALIASES = {**{n: n for n in SETTING_NAMES}, "temp": "temperature", "max_tokens": "max_new_tokens",
                   "rep": "repetition_penalty", "penalty": "repetition_penalty", "repeat_penalty": "repetition_penalty"}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_setting(key: str, value: Any) -> Any:
    """Text → the field's type, with a one-line error naming the field."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if key in ("temperature", "top_p", "repetition_penalty"):
        try:
            return float(text)
        except ValueError:
            raise TuituneError(f"{key} must be a number, got {value!r}") from None
    if key in ("top_k", "max_new_tokens"):
        try:
            return int(text)
        except ValueError:
            raise TuituneError(f"{key} must be a whole number, got {value!r}") from None
    if key == "seed":
        if text.lower() in ("", "none", "random", "off"):
            return None
        try:
            return int(text)
        except ValueError:
            raise TuituneError(f"seed must be a whole number (or 'random'), got {value!r}") from None
    if key == "stop":
        return tuple(w for w in (s.strip() for s in text.split(",")) if w) if text else ()
    return value


# --- what to load --------------------------------------------------------------------------------

@dataclass
class ModelSource:
    """Where a chat model comes from: a base (folder or hub id) and maybe an adapter on it."""

    base: str
    adapter: Path | None = None
    label: str = ""
    template: str | None = None      # the run's template, when a run is loaded
    trust_remote_code: bool = False
    run: str | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.label:
            self.label = Path(self.base).name + (f" + {self.adapter.name}" if self.adapter else "")


def _is_model_dir(p: Path) -> bool:
    return (p / "config.json").is_file()


def _is_adapter_dir(p: Path) -> bool:
    return (p / "adapter_config.json").is_file()


def _run_of(p: Path):
    """The run folder holding ``p`` (an adapter or a checkpoint inside runs/<id>/), or None."""
    from tuitune.train.runfolder import RunFolder

    for parent in [p, *p.parents][:4]:
        if (parent / "config.yaml").is_file() and ((parent / "state.json").is_file() or parent.parent.name == "runs"):
            return RunFolder(parent)
    return None


def _run_config(run, workspace):
    from tuitune.config import load_config

    state = run.read_state()
    ws = state.get("workspace") or (str(run.path.parent.parent) if run.path.parent.name == "runs" else workspace)
    if not run.config_path.is_file():
        raise TuituneError(f"{run.path}: the run has no config.yaml, so its base model is unknown; "
                           "load its adapter with --adapter on the base model folder")
    return load_config(run.config_path, workspace=ws)


def _checkpoint_names(run) -> str:
    return ", ".join(p.name for p in run.list_checkpoints()) or "none yet"


def _from_run(run, workspace, selector: str | None) -> ModelSource:
    cfg = _run_config(run, workspace)
    base = cfg.model_path()
    common = dict(template=cfg.template, trust_remote_code=cfg.trust_remote_code, run=run.id)
    if selector in ("base",):
        return ModelSource(base, None, f"{run.id}:base", **common)
    notes: list[str] = []
    if selector in (None, "", "final", "adapter", "latest"):
        if selector != "latest":
            if _is_adapter_dir(run.adapter_dir):
                return ModelSource(base, run.adapter_dir, run.id, **common)
            if _is_model_dir(run.model_dir):
                return ModelSource(str(run.model_dir), None, run.id, **common)
        cp = run.latest_checkpoint()
        if cp is None:
            status = run.status().get("status", "unknown")
            raise TuituneError(f"run {run.id} ({status}) has no final adapter and no complete checkpoint yet; "
                               "wait for its first checkpoint (training.save_steps) or pick another run")
        if selector != "latest":
            notes.append(f"run {run.id} has no final adapter yet ({run.status().get('status', 'unknown')}): "
                         f"using its latest checkpoint, {cp.name}")
    else:
        step = selector.removeprefix("checkpoint-").removeprefix("checkpoint")
        if not step.isdigit():
            raise TuituneError(f"{run.id}:{selector}: after the colon give base, checkpoint-N or N; "
                               f"checkpoints: {_checkpoint_names(run)}")
        cp = run.checkpoints / f"checkpoint-{int(step)}"
        if cp not in run.list_checkpoints():
            raise TuituneError(f"run {run.id} has no complete checkpoint-{int(step)}; "
                               f"checkpoints: {_checkpoint_names(run)}")
    label = f"{run.id}:{cp.name}"
    if _is_model_dir(cp):
        return ModelSource(str(cp), None, label, notes=notes, **common)
    if _is_adapter_dir(cp):
        return ModelSource(base, cp, label, notes=notes, **common)
    raise TuituneError(f"{cp}: neither model weights (config.json) nor an adapter (adapter_config.json)")


def _adapter_base(adapter: Path, workspace) -> ModelSource:
    run = _run_of(adapter)
    if run is not None:
        cfg = _run_config(run, workspace)
        label = run.id if adapter == run.adapter_dir else f"{run.id}:{adapter.name}"
        return ModelSource(cfg.model_path(), adapter, label, template=cfg.template,
                           trust_remote_code=cfg.trust_remote_code, run=run.id)
    try:
        base = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise TuituneError(f"{adapter / 'adapter_config.json'}: unreadable ({exc}); is this a PEFT adapter?") from None
    if not base:
        raise TuituneError(f"{adapter}: adapter_config.json names no base model; "
                           "give the base model folder and this folder as --adapter")
    bp = Path(base).expanduser()
    if not bp.is_absolute() and (Path(workspace) / bp).exists():
        bp = Path(workspace) / bp
    return ModelSource(str(bp) if bp.exists() else base, adapter, f"{Path(base).name} + {adapter.name}")


def _local(spec: str, workspace) -> Path | None:
    p = Path(spec).expanduser()
    if p.exists():
        return p.resolve()
    if not p.is_absolute() and (Path(workspace) / p).exists():
        return (Path(workspace) / p).resolve()
    return None


def _looks_like_hub_id(spec: str, workspace) -> bool:
    """``org/name``, unless ``org`` is a folder here or a workspace folder (models/x is a path)."""
    parts = spec.split("/")
    if len(parts) != 2 or not all(parts) or spec.startswith((".", "/", "~")):
        return False
    return parts[0] not in ("models", "runs", "data", "configs") and not (Path(workspace) / parts[0]).exists() \
        and not Path(parts[0]).exists()


MODEL_HELP = ("a model folder (config.json), an adapter folder (adapter_config.json), a run id, "
              "RUN:checkpoint-N or RUN:base")


def resolve_source(spec: str, workspace: str | Path = ".", adapter: str | Path | None = None,
                   checkpoint: int | str | None = None) -> ModelSource:
    """What ``spec`` names (see the module docstring); TuituneError naming it when it is none of them."""
    from tuitune.train.runfolder import RunFolder, find_run

    spec = str(spec).strip()
    if not spec:
        raise TuituneError(f"no model given; give {MODEL_HELP}")
    workspace = Path(workspace)
    path = _local(spec, workspace)
    run = selector = None
    if path is None and ":" in spec:
        head, _, selector = spec.rpartition(":")
        run = find_run(workspace, head)
    elif path is not None and path.is_dir() and not _is_model_dir(path) and not _is_adapter_dir(path) \
            and (path / "config.yaml").is_file():
        run = RunFolder(path)
    if run is None and path is None:
        try:
            run = find_run(workspace, spec)
        except TuituneError:
            if _looks_like_hub_id(spec, workspace) and adapter is None and checkpoint is None:
                return ModelSource(spec, None, spec)
            raise TuituneError(f"{spec}: no such folder, and no run of that name in {workspace / 'runs'}; "
                               f"give {MODEL_HELP}") from None
    if run is not None:
        if adapter is not None:
            raise TuituneError(f"{spec} is a run, which brings its own adapter; give --adapter with a model folder")
        if checkpoint is not None:
            if selector:
                raise TuituneError(f"{spec}: give the checkpoint once, either as RUN:checkpoint-N or --checkpoint N")
            selector = f"checkpoint-{checkpoint}"
        return _from_run(run, workspace, selector)
    assert path is not None
    if checkpoint is not None:
        raise TuituneError(f"--checkpoint {checkpoint} needs a run, and {spec} is a folder; "
                           "give the run id (or the checkpoint folder itself)")
    if not path.is_dir():
        raise TuituneError(f"{path}: not a folder; give {MODEL_HELP}")
    if _is_model_dir(path):
        src = ModelSource(str(path), None, path.name)
        run = _run_of(path)
        if run is not None:  # a full fine-tune's model/ or checkpoint: use the run's template
            try:
                cfg = _run_config(run, workspace)
                src.template, src.trust_remote_code, src.run = cfg.template, cfg.trust_remote_code, run.id
                src.label = run.id if path == run.model_dir else f"{run.id}:{path.name}"
            except TuituneError:
                pass
        if adapter is not None:
            ad = _local(str(adapter), workspace)
            if ad is None or not _is_adapter_dir(ad):
                raise TuituneError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json); "
                                   "give the folder a run saved as adapter/ or checkpoints/checkpoint-N/")
            src.adapter = ad
            src.label = f"{path.name} + {ad.parent.name + '/' if ad.name == 'adapter' else ''}{ad.name}"
        return src
    if _is_adapter_dir(path):
        if adapter is not None:
            raise TuituneError(f"{path} is already an adapter; give the base model folder as MODEL and it as --adapter")
        return _adapter_base(path, workspace)
    raise TuituneError(f"{path}: not a model folder (no config.json), not an adapter (no adapter_config.json) "
                       f"and not a run; give {MODEL_HELP}")


# --- loading -------------------------------------------------------------------------------------

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
        from tuitune.config.convert import auto_precision

        dtype = auto_precision()[0]
    from tuitune.config.convert import torch_dtype

    return torch_dtype(dtype)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def load_model(base: str, adapters: dict[str, Path] | None = None, dtype: str = "auto", bits: int | None = None,
               trust_remote_code: bool = False, progress: Callable[[str], None] | None = None) -> LoadedModel:
    """Load ``base`` (and each named adapter on it) for generation; errors are one line."""
    adapters = dict(adapters or {})
    say = progress or (lambda _msg: None)
    if bits is not None and bits not in BITS:
        raise TuituneError(f"--bits must be 4 or 8, got {bits}")
    from tuitune.config.convert import allow_bitsandbytes, keep_bitsandbytes_out

    # bitsandbytes only for --bits: peft would import it anyway, and it prints noise on some CPUs.
    allow_bitsandbytes() if bits is not None else keep_bitsandbytes_out()
    say("importing torch and transformers")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    cuda = torch.cuda.is_available()
    if bits is not None and not cuda:
        raise TuituneError(f"--bits {bits} quantizes the weights with bitsandbytes, which needs a CUDA GPU, and "
                           "this machine has none; drop --bits to load the model unquantized")
    torch_dtype = _torch_dtype(dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if bits is not None:
        from tuitune.config.convert import bnb_config

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
        raise TuituneError(f"{base}: the model could not be loaded ({_first_line(exc)})") from None
    for i, (name, path) in enumerate(adapters.items()):
        say(f"applying adapter {path.name}")
        model = _apply_adapter(model, base, name, Path(path), first=i == 0)
    model.eval()
    say("warming up")
    _warm_up(model)
    device = str(getattr(model, "device", "cpu"))
    return LoadedModel(model, base, adapters, device, str(torch_dtype).removeprefix("torch."), bits)


def _warm_up(model) -> None:
    """One tiny generation, so the first answer's time to first token is not the library's set-up."""
    import torch

    ids = torch.tensor([[model.generation_config.bos_token_id or 0] * 2], device=model.device)
    with _GENERATE_LOCK, torch.inference_mode():
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
                detail = _first_line(exc)
            raise _adapter_mismatch(adapter, base, detail) from None
    for w in caught:
        text = str(w.message)
        if "missing adapter keys" in text.lower() or "unexpected keys" in text.lower():
            raise _adapter_mismatch(adapter, base, text.splitlines()[0][:240])
    return model


def _load_tokenizer(path: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001
        raise TuituneError(f"{path}: the tokenizer could not be loaded ({_first_line(exc)})") from None


def _has_tokenizer(p: Path) -> bool:
    return (p / "tokenizer_config.json").is_file() or (p / "tokenizer.json").is_file()


def _check_template(tokenizer, template: str, where: str) -> str:
    from tuitune.templates import TEMPLATES, get_template

    get_template(template)  # unknown name: a one-line error listing them
    if template == "auto" and not getattr(tokenizer, "chat_template", None):
        raise TuituneError(f"{where}: the model has no chat template; choose a named template "
                           f"(--template) from: {', '.join(TEMPLATES)}")
    return template


# --- streaming -----------------------------------------------------------------------------------

@dataclass
class Stats:
    """How one answer went. ``ttft``: seconds from the request to the first new token."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    ttft: float | None = None
    seconds: float = 0.0
    seed: int | None = None
    greedy: bool = False
    finish: str = ""            # eos, length, stop_word, stopped (by the user), error
    trimmed_turns: int = 0      # oldest turns dropped to fit the context
    note: str = ""

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_s": round(self.tokens_per_s, 2)}

    def line(self, timings: bool = True) -> str:
        parts = [f"{self.new_tokens} tokens"]
        if timings and self.ttft is not None:
            parts.append(f"first token {self.ttft * 1000:.0f} ms")
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.greedy:
            parts.append("greedy")
        elif self.seed is not None:
            parts.append(f"seed {self.seed}")
        if self.finish in ("length", "stopped"):
            parts.append({"length": "hit max tokens", "stopped": "stopped"}[self.finish])
        return " · ".join(parts)


class _Streamer:
    """A transformers streamer: the generating thread only appends token ids to a list.

    The reader is woken for the first token and at the end, and otherwise collects what
    has piled up every ``POLL`` seconds: waking it for every token would cost the
    generating thread the GIL a few hundred times a second.
    """

    POLL = 0.02

    def __init__(self, clock: dict):
        self.clock = clock
        self.prompt_seen = False
        self.ids: list[int] = []
        self.taken = 0
        self.done = False
        self.wake = threading.Event()

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        if "first" not in self.clock:
            self.clock["first"] = time.perf_counter()
            self.wake.set()

    def end(self) -> None:
        pass

    def finish(self) -> None:
        self.done = True
        self.wake.set()

    def take(self) -> tuple[list[int], bool]:
        """Wait for new ids (or the end): (new ids, finished)."""
        while True:
            done = self.done  # read before the ids: no id appended before the end is missed
            n = len(self.ids)
            if n > self.taken or done:
                new = self.ids[self.taken:n]
                self.taken = n
                return new, done and n == len(self.ids)
            self.wake.wait(self.POLL)
            if not self.done:
                self.wake.clear()


class _StopWords:
    """Cuts text at the first stop word, holding back a tail that may be the start of one."""

    def __init__(self, words):
        self.words = [w for w in words if w]
        self.pending = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if self.hit:
            return ""
        buf = self.pending + text
        if not self.words:
            self.pending = ""
            return buf
        cut = min((i for i in (buf.find(w) for w in self.words) if i >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            self.pending = ""
            return buf[:cut]
        hold = 0
        for w in self.words:
            for k in range(min(len(w) - 1, len(buf)), hold, -1):
                if buf.endswith(w[:k]):
                    hold = k
                    break
        self.pending = buf[len(buf) - hold:] if hold else ""
        return buf[:len(buf) - hold]

    def flush(self) -> str:
        out, self.pending = ("" if self.hit else self.pending), ""
        return out


class _Detokenizer:
    """Incremental decoding that never splits a character (byte-level BPE pieces of CJK text)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def add(self, ids: list[int]) -> str:
        self.ids.extend(ids)
        decode = self.tok.decode
        prefix_text = decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        new_text = decode(self.ids[self.prefix:], skip_special_tokens=True)
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return new_text[len(prefix_text):]
        return ""

    def rest(self) -> str:
        prefix_text = self.tok.decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        new_text = self.tok.decode(self.ids[self.prefix:], skip_special_tokens=True)
        self.prefix = self.read = len(self.ids)
        return new_text[len(prefix_text):]


@dataclass
class Answer:
    prompt: str
    text: str
    stats: Stats


class ChatSession:
    """A conversation with one loaded model. Not thread-safe except :meth:`stop` (call it from anywhere)."""

    def __init__(self, settings: GenerationSettings | None = None):
        self.settings = (settings or GenerationSettings()).validate()
        self.history: list[dict] = []     # [{"role": "user"|"assistant", "content": ...}]
        self.source: ModelSource | None = None
        self.loaded: LoadedModel | None = None
        self.adapter_name: str | None = None
        self.tokenizer = None
        self.template: str = "auto"
        self.context_length: int = 2048
        self.last: Answer | None = None
        self._cancel = threading.Event()
        self.generating = False

    # --- loading ----------------------------------------------------------------------------
    def load(self, source: ModelSource | str, *, workspace: str | Path = ".", adapter=None, checkpoint=None,
             template: str | None = None, dtype: str = "auto", bits: int | None = None,
             progress: Callable[[str], None] | None = None) -> "ChatSession":
        """Load a model (freeing the one loaded before); ``source`` is a spec or a :class:`ModelSource`."""
        if not isinstance(source, ModelSource):
            source = resolve_source(source, workspace, adapter=adapter, checkpoint=checkpoint)
        self.unload()
        adapters = {"tuned": source.adapter} if source.adapter else {}
        loaded = load_model(source.base, adapters, dtype=dtype, bits=bits,
                            trust_remote_code=source.trust_remote_code, progress=progress)
        return self.attach(loaded, "tuned" if source.adapter else None, source, template)

    def attach(self, loaded: LoadedModel, adapter_name: str | None, source: ModelSource,
               template: str | None = None) -> "ChatSession":
        """Use an already loaded model (one of its adapters, or None for the bare base)."""
        tok_dir = source.adapter if source.adapter and _has_tokenizer(source.adapter) else source.base
        tokenizer = _load_tokenizer(str(tok_dir), source.trust_remote_code)
        name = template or source.template or "auto"
        self.template = _check_template(tokenizer, name, source.label or source.base)
        self.tokenizer = tokenizer
        self.loaded, self.adapter_name, self.source = loaded, adapter_name, source
        self.context_length = _context_length(loaded.model, tokenizer)
        self.reset()
        return self

    def set_template(self, template: str | None) -> str:
        """Use another prompt template from the next answer on (None: the run's, else ``auto``)."""
        name = template or (self.source.template if self.source else None) or "auto"
        self.template = _check_template(self.tokenizer, name, self.source.label if self.source else "model")
        return self.template

    def unload(self) -> None:
        """Drop the model; its memory is freed once no other session shares it."""
        loaded, self.loaded, self.tokenizer = self.loaded, None, None
        if loaded is not None:
            self.stop()
            del loaded
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # noqa: BLE001
                pass

    @property
    def is_loaded(self) -> bool:
        return self.loaded is not None and self.loaded.model is not None

    def describe(self) -> str:
        if not self.is_loaded:
            return "no model loaded"
        lm = self.loaded
        bits = f" {lm.bits}-bit" if lm.bits else ""
        return f"{self.source.label} · template {self.template} · {lm.device} {lm.dtype}{bits}"

    # --- conversation -----------------------------------------------------------------------
    def reset(self) -> None:
        self.history = []
        self.last = None

    def stop(self) -> None:
        """Ask the running generation to stop after its current token (safe from any thread)."""
        self._cancel.set()

    def messages(self, prompt: str | None = None, history: list[dict] | None = None) -> list[dict]:
        msgs = [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        msgs += self.history if history is None else history
        if prompt is not None:
            msgs.append({"role": "user", "content": prompt})
        return msgs

    def _encode(self, prompt: str, max_new: int) -> tuple[list[int], int, int, str]:
        """Prompt ids, oldest turns dropped, max_new_tokens (maybe lowered) and a note."""
        from tuitune.templates import encode_prompt

        history = list(self.history)
        dropped = 0
        while True:
            ids = encode_prompt(self.tokenizer, self.template, self.messages(prompt, history))
            if len(ids) + max_new <= self.context_length or not history:
                break
            # Drop the oldest turn: a user message and the answer after it.
            cut = 2 if len(history) >= 2 and history[1]["role"] == "assistant" else 1
            history = history[cut:]
            dropped += 1
        note = ""
        if dropped:
            self.history = history
            note = (f"dropped the oldest {dropped} turn{'s' if dropped > 1 else ''} to fit the context of "
                    f"{self.context_length} tokens")
        if len(ids) + max_new > self.context_length:
            room = self.context_length - len(ids)
            if room < 1:
                raise TuituneError(f"the prompt is {len(ids)} tokens and the model's context is "
                                   f"{self.context_length}; shorten the prompt or the system prompt")
            max_new = room
            note = (note + "; " if note else "") + f"max_new_tokens lowered to {room} to fit the context"
        return ids, dropped, max_new, note

    def _generation_config(self, s: GenerationSettings, max_new: int, eos_ids: list[int]):
        from transformers import GenerationConfig

        base = self.loaded.model.generation_config
        pad = base.pad_token_id if base.pad_token_id is not None else (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos_ids[0])
        kw: dict[str, Any] = dict(max_new_tokens=max_new, eos_token_id=eos_ids, pad_token_id=pad,
                                  bos_token_id=base.bos_token_id, repetition_penalty=s.repetition_penalty)
        if s.greedy:
            kw.update(do_sample=False)
        else:
            kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
        return GenerationConfig(**kw)

    def _stop_ids(self, words: list[str]) -> tuple[list[int], list[str]]:
        """Stop words that are single special tokens become eos ids; the rest are cut from the text."""
        tok = self.tokenizer
        ids: list[int] = []
        text_words: list[str] = []
        special = set(tok.all_special_tokens) | {t.content for t in getattr(tok, "added_tokens_decoder", {}).values()}
        for w in words:
            tid = tok.convert_tokens_to_ids(w) if w in special else None
            if isinstance(tid, int) and tid != tok.unk_token_id:
                ids.append(tid)
            else:
                text_words.append(w)
        gen_eos = self.loaded.model.generation_config.eos_token_id
        for e in ([gen_eos] if isinstance(gen_eos, int) else (gen_eos or [])):
            ids.append(e)
        if tok.eos_token_id is not None:
            ids.append(tok.eos_token_id)
        return list(dict.fromkeys(ids)), text_words

    def stream(self, prompt: str) -> Iterator[str]:
        """Answer ``prompt``: yields text pieces as tokens arrive; then ``self.last`` holds the Answer.

        The answer joins the history. Closing the iterator early stops the generation.
        """
        if not self.is_loaded:
            raise TuituneError("no model loaded; load one first")
        if not isinstance(prompt, str) or not prompt.strip():
            raise TuituneError("empty prompt; type a question")
        import torch

        from tuitune.templates import stop_words

        t0 = time.perf_counter()
        s = replace(self.settings).validate()
        self._cancel.clear()
        ids, dropped, max_new, note = self._encode(prompt, s.max_new_tokens)
        eos_ids, text_words = self._stop_ids([*stop_words(self.tokenizer, self.template), *s.stop])
        seed = s.seed if s.seed is not None else random.randrange(2**32)
        gen_cfg = self._generation_config(s, max_new, eos_ids)
        model = self.loaded.model
        input_ids = torch.tensor([ids], device=model.device)
        clock: dict = {}
        cancel = self._cancel
        stopper = _cancel_criteria(cancel)
        streamer = _Streamer(clock)
        adapter_name, is_peft = self.adapter_name, self.loaded.is_peft
        outcome: dict = {}

        def run() -> None:
            try:
                with _GENERATE_LOCK, torch.inference_mode():
                    from transformers import set_seed

                    set_seed(seed)
                    if is_peft and adapter_name is not None:
                        model.set_adapter(adapter_name)
                    ctx = model.disable_adapter() if is_peft and adapter_name is None else nullcontext()
                    with ctx:
                        out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                             generation_config=gen_cfg, streamer=streamer,
                                             stopping_criteria=[stopper])
                    outcome["n"] = int(out.shape[1] - input_ids.shape[1])
                    outcome["last"] = int(out[0, -1]) if outcome["n"] else None
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                outcome["error"] = exc
            finally:
                clock["end"] = time.perf_counter()
                streamer.finish()

        thread = threading.Thread(target=run, name="tuitune-generate", daemon=True)
        self.generating = True
        thread.start()
        detok = _Detokenizer(self.tokenizer)
        stops = _StopWords(text_words)
        pieces: list[str] = []
        finished = False
        try:
            while not finished:
                batch, finished = streamer.take()
                text = detok.add(batch) if batch else ""
                if finished:
                    text += detok.rest()
                out = stops.feed(text) if text else ""
                if finished:
                    out += stops.flush()
                if stops.hit:
                    cancel.set()
                if out:
                    pieces.append(out)
                    yield out
        finally:
            if not finished:  # the consumer went away: stop the thread
                cancel.set()
            thread.join()
            self.generating = False
            text = "".join(pieces)
            user_stopped = cancel.is_set() and not stops.hit
            if "error" in outcome and not isinstance(outcome["error"], (KeyboardInterrupt, SystemExit)):
                finish = "error"
            elif stops.hit:
                finish = "stop_word"
            elif user_stopped:
                finish = "stopped"
            elif outcome.get("last") in eos_ids:
                finish = "eos"
            else:
                finish = "length"
            stats = Stats(prompt_tokens=len(ids), new_tokens=outcome.get("n", len(detok.ids)),
                          ttft=(clock["first"] - t0) if "first" in clock else None,
                          seconds=clock.get("end", time.perf_counter()) - t0, seed=seed, greedy=s.greedy, finish=finish,
                          trimmed_turns=dropped, note=note)
            self.last = Answer(prompt, text, stats)
            if finish != "error":
                self.history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}]
        if "error" in outcome:
            exc = outcome["error"]
            if isinstance(exc, TuituneError):
                raise exc
            raise TuituneError(f"generation failed ({_first_line(exc)})") from exc

    def ask(self, prompt: str) -> str:
        """The whole answer at once (``stream`` joined)."""
        return "".join(self.stream(prompt))

    # --- transcript -------------------------------------------------------------------------
    def conversation(self) -> dict:
        """The history in tuitune's data format: ``{"conversation": [{system?, input, output}, ...]}``.

        Turns with a blank answer are left out.
        """
        from tuitune.templates import to_turns

        # A turn whose answer is blank is no training example: it is left out.
        kept: list[dict] = []
        h = self.history
        for i in range(0, len(h) - 1, 2):
            if h[i]["role"] == "user" and h[i + 1]["role"] == "assistant" and h[i + 1]["content"].strip():
                kept += h[i:i + 2]
        if not kept:
            return {"conversation": []}
        turns = [t for t in to_turns(self.messages(history=kept)) if t.get("output") is not None]
        return {"conversation": turns}

    def save_transcript(self, path: str | Path, append: bool = True) -> Path:
        """Write the conversation as one JSONL line (appended to what ``path`` holds), atomically."""
        return save_conversations(path, [self], append=append)


def _cancel_criteria(event: threading.Event):
    import torch
    from transformers import StoppingCriteria

    cache: dict = {}

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            key = (input_ids.shape[0], input_ids.device, event.is_set())
            out = cache.get(key)
            if out is None:
                out = cache[key] = torch.full(key[:1], key[2], dtype=torch.bool, device=key[1])
            return out

    return _Cancel()


def _context_length(model, tokenizer) -> int:
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


def save_conversations(path: str | Path, sessions: list[ChatSession], append: bool = True) -> Path:
    """Each session's conversation as one JSONL line, added to ``path`` atomically."""
    from tuitune.fsutil import atomic_write_text

    path = Path(path).expanduser()
    records = [s.conversation() for s in sessions]
    records = [r for r in records if r["conversation"]]
    if not records:
        raise TuituneError("nothing to save yet: the conversation has no answers")
    old = ""
    if append and path.exists():
        if path.is_dir():
            raise TuituneError(f"{path}: is a folder; give a file name ending in .jsonl")
        old = path.read_text(encoding="utf-8")
        if old and not old.endswith("\n"):
            old += "\n"
    new = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return atomic_write_text(path, old + new)


# --- compare mode --------------------------------------------------------------------------------

def load_pair(a: ModelSource, b: ModelSource, *, template: str | None = None, dtype: str = "auto",
              bits: int | None = None, settings: GenerationSettings | None = None,
              progress: Callable[[str], None] | None = None) -> tuple[ChatSession, ChatSession]:
    """Two sessions for compare mode. Sources on the same base share one copy of it in memory."""
    settings = settings or GenerationSettings()
    if Path(a.base) == Path(b.base) and a.trust_remote_code == b.trust_remote_code:
        adapters: dict[str, Path] = {}
        names = []
        for side, src in (("a", a), ("b", b)):
            if src.adapter is None:
                names.append(None)
            else:
                hit = next((n for n, p in adapters.items() if p == src.adapter), None)
                if hit is None:
                    hit = side
                    adapters[hit] = src.adapter
                names.append(hit)
        loaded = load_model(a.base, adapters, dtype=dtype, bits=bits, trust_remote_code=a.trust_remote_code,
                            progress=progress)
        sa = ChatSession(settings).attach(loaded, names[0], a, template)
        sb = ChatSession(settings).attach(loaded, names[1], b, template)
        return sa, sb
    sa = ChatSession(settings).load(a, template=template, dtype=dtype, bits=bits, progress=progress)
    sb = ChatSession(settings).load(b, template=template, dtype=dtype, bits=bits, progress=progress)
    return sa, sb


def compare(sessions: list[ChatSession], prompt: str) -> list[Answer]:
    """One prompt to each session in turn, each with the same settings and seed."""
    out = []
    for s in sessions:
        s.ask(prompt)
        out.append(s.last)
    return out


__all__ = ["GenerationSettings", "ModelSource", "LoadedModel", "ChatSession", "Stats", "Answer",
           "resolve_source", "load_model", "load_pair", "compare", "save_conversations", "SETTING_NAMES",
           "DTYPES", "BITS", "MODEL_HELP"]
