"""The run config's schema: pydantic models, one section each, every field described.

Defaults follow XTuner's QLoRA configs (lr 2e-4, r 64, alpha 16, dropout 0.1,
warmup 0.03, cosine, max grad norm 1, save_total_limit 2). Unknown keys are errors
(``extra="forbid"``); the loader turns them into "did you mean" messages.

This module imports pydantic and the trackers' table (``tuitune.train.tracking``, standard library
only) and nothing heavy: the screens validate every keystroke with it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_serializer, model_validator

from tuitune.config.schema_grpo import GrpoConfig
from tuitune.config.schema_notify import NotifyConfig
from tuitune.data.records import PREFERENCE_TASKS  # the record kinds' bottom layer: it never imports tuitune.config
from tuitune.train.tracking import TRACKER_NAMES  # it never imports tuitune.config: no cycle

SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts",
              "polynomial", "inverse_sqrt", "cosine_with_min_lr")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "paged_adamw_32bit", "paged_adamw_8bit",
              "adamw_bnb_8bit", "adafactor", "sgd", "lion_8bit", "paged_lion_8bit")
DEEPSPEED = ("none", "zero2", "zero3", "zero2_offload", "zero3_offload")
#: TRL's DPO losses offered here (sigmoid is the DPO paper's; the others are its best-known variants).
DPO_LOSSES = ("sigmoid", "ipo", "hinge", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot",
              "apo_zero", "apo_down", "sigmoid_norm")


class _Section(BaseModel):
    # validate_assignment: the screen assigns field by field and must see the same errors.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSource(_Section):
    """One file of a training mix."""

    path: str = Field(..., min_length=1, description="the data file (relative paths are in the workspace)")
    weight: Optional[float] = Field(None, gt=0, description="how many times each record counts per epoch: 2 "
                                                            "doubles the file, 0.5 takes half of it (seeded)")
    max_records: Optional[int] = Field(None, ge=1, description="at most this many of its records (seeded)")

    @model_serializer(mode="wrap")
    def _unset_left_out(self, handler):
        # A mix in a YAML file reads as the user wrote it: no "weight: null" beside each path.
        return {k: v for k, v in handler(self).items() if v is not None or k == "path"}

    def line(self) -> str:
        """``path weight=W max_records=N``: the form's one line for this source."""
        opts = [f"weight={self.weight:g}"] if self.weight is not None else []
        opts += [f"max_records={self.max_records}"] if self.max_records is not None else []
        return " ".join([self.path, *opts])

    @classmethod
    def parse_line(cls, text: str) -> "DataSource | str":
        """The inverse of :meth:`line` (a bare path stays a string), for a form's text."""
        path, *opts = text.split()
        fields: dict = {"path": path}
        for opt in opts:
            key, sep, value = opt.partition("=")
            if not sep or key not in ("weight", "max_records"):
                raise ValueError(f"{opt!r}: write weight=W or max_records=N after the path")
            fields[key] = value
        return cls.model_validate(fields) if opts else path


class DataConfig(_Section):
    train: Union[str, list[Union[str, DataSource]]] = Field(
        "data/train.jsonl", min_length=1,
        description="training data: a file (JSONL or JSON, XTuner conversations or preference pairs), or a "
                    "list of files mixed into one run, each with an optional weight or max_records; relative "
                    "paths are in the workspace")
    eval: Optional[str] = Field(None, description="held-out data file for eval loss, or empty for none")
    system: Optional[str] = Field(None, description="system prompt put before every conversation, or empty for none")
    max_length: int = Field(2048, gt=0, description="longest sample in tokens; longer ones are cut")
    pack: bool = Field(True, description="pack several short samples into one max_length sequence (faster)")

    @field_validator("train", mode="before")
    @classmethod
    def _sources(cls, v):
        # Each entry checked here, so an error names the entry and its field (a union would report
        # every way the value failed to be a string or a list).
        if not isinstance(v, list):
            return v
        if not v:
            raise ValueError("list at least one data file")
        from pydantic import ValidationError

        out = []
        for i, item in enumerate(v, 1):
            if isinstance(item, (str, DataSource)):
                out.append(item)
                continue
            if not isinstance(item, dict):
                raise ValueError(f"entry {i} is {type(item).__name__}; give a path, or {{path: ..., weight: ..., "
                                 "max_records: ...}")
            try:
                out.append(DataSource.model_validate(item))
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                where = ".".join(map(str, err["loc"])) or "entry"
                raise ValueError(f"entry {i} ({item.get('path', 'no path')}): {where}: {err['msg']}") from None
        return out

    def sources(self) -> list[DataSource]:
        """The training files as sources (a single file is a mix of one)."""
        items = self.train if isinstance(self.train, list) else [self.train]
        return [DataSource(path=i) if isinstance(i, str) else i for i in items]

    @property
    def first_train(self) -> str:
        """The first training file (where a split's test.jsonl is looked for)."""
        return self.sources()[0].path


class LoraSection(_Section):
    r: int = Field(64, ge=1, le=4096, description="LoRA rank: size of the low-rank update (8-64 typical)")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator: the update is scaled by alpha / r")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the LoRA input, from 0 up to (not incl.) 1")
    target_modules: Union[Literal["all-linear"], list[str]] = Field(
        "all-linear", description="layers that get LoRA: all-linear, or names such as q_proj, v_proj")
    modules_to_save: list[str] = Field(
        default_factory=list,
        description="layers trained in full and saved with the adapter, e.g. embed_tokens, lm_head")

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v):
        if isinstance(v, list) and not [m for m in v if m.strip()]:
            raise ValueError("list at least one layer name, or write all-linear")
        return v


class QuantizationConfig(_Section):
    bits: Literal[4, 8] = Field(4, description="weight bits when loading the base model for QLoRA: 4 or 8")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type: nf4 (QLoRA paper) or fp4")
    double_quant: bool = Field(True, description="quantize the quantization constants too (saves ~0.4 bit/param)")
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="dtype of the matmuls on dequantized weights; auto: as precision auto picks")


class TrainingConfig(_Section):
    epochs: float = Field(3, gt=0, description="passes over the training data (ignored when max_steps is set)")
    max_steps: Optional[int] = Field(None, gt=0, description="stop after this many optimizer steps; empty: use epochs")
    batch_size: int = Field(1, ge=1, description="samples per GPU per forward pass")
    grad_accum: int = Field(16, ge=1, description="forward passes accumulated per optimizer step")
    lr: float = Field(2e-4, gt=0, lt=1, description="peak learning rate (2e-4 for LoRA, ~2e-5 for full)")
    scheduler: Literal[SCHEDULERS] = Field("cosine", description="learning-rate schedule after warmup")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="fraction of the steps spent warming the lr up from 0")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="clip the gradient norm to this value")
    max_nonfinite_steps: int = Field(
        3, ge=0, description="stop the run when the loss is NaN or inf this many logged steps in a row, keeping "
                             "the last checkpoint with finite weights (0: never stop)")
    optimizer: Literal[OPTIMIZERS] = Field("adamw_torch_fused",
                                           description="optimizer (paged_adamw_* save memory)")
    gradient_checkpointing: bool = Field(True, description="recompute activations in backward: less memory, ~30% slower")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on GPUs that have it, else fp16; on a CPU bf16 with AMX/AVX-512 bf16, else fp32")
    kernels: Literal["auto", "liger", "none"] = Field(
        "auto", description="the sft/pretrain loss: auto: Liger's fused kernels on a CUDA GPU with liger-kernel, "
                            "else the head and loss in chunks (no full logits); liger: Liger; none: plain")
    seed: int = Field(42, ge=0, description="random seed for data order and initialisation")
    save_steps: int = Field(500, ge=1, description="save a checkpoint every this many steps")
    save_total_limit: Optional[int] = Field(2, ge=1, description="keep only the newest N checkpoints; empty: keep all")
    logging_steps: int = Field(10, ge=1, description="log loss and lr every this many steps")
    report_to: list[str] = Field(
        default_factory=list,
        description=f"experiment trackers to log to as well: {', '.join(TRACKER_NAMES)} "
                    "(their files go in the run folder's tracking/)")

    @field_validator("report_to")
    @classmethod
    def _known_trackers(cls, v: list[str]) -> list[str]:
        out = []
        for name in (s.strip().lower() for s in v):
            if not name or name == "none":
                continue
            if name not in TRACKER_NAMES:
                import difflib
                close = difflib.get_close_matches(name, TRACKER_NAMES, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"unknown tracker {name!r}; {hint}choose from: {', '.join(TRACKER_NAMES)}")
            if name not in out:
                out.append(name)
        return out


class EvaluationConfig(_Section):
    every: int = Field(500, ge=1, description="evaluate (eval loss, sample answers) every this many steps")
    prompts: list[str] = Field(default_factory=list,
                               description="questions the model answers at each evaluation, one per line")
    max_new_tokens: int = Field(128, ge=1, le=8192, description="longest sample answer in tokens")
    eval_loss: bool = Field(True, description="compute the loss on data.eval at each evaluation")

    @field_validator("prompts")
    @classmethod
    def _strip(cls, v: list[str]) -> list[str]:
        return [p for p in (s.strip() for s in v) if p]


class PreferenceConfig(_Section):
    beta: float = Field(0.1, gt=0, description="dpo: how far from the reference model (higher stays closer); "
                                               "orpo: weight of the odds-ratio term (its lambda)")
    loss_type: Literal[DPO_LOSSES] = Field("sigmoid", description="dpo loss: sigmoid (the DPO paper), ipo, hinge, "
                                                                 "robust, ... (TRL's names)")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="dpo robust/exo: the chance a pair's "
                                                                   "preference is flipped")
    reference: Literal["auto", "copy", "precompute"] = Field(
        "auto", description="dpo reference model: auto (lora/qlora: the base with the adapter off, no second "
                            "copy; full: a frozen copy), copy, or precompute (its log-probs before training)")


class DistributedConfig(_Section):
    gpus: int = Field(1, ge=1, description="GPUs to use on this node (1 on a CPU-only machine)")
    nnodes: int = Field(1, ge=1, description="machines in the job")
    node_rank: int = Field(0, ge=0, description="this machine's index among nnodes (0 is the master)")
    master_addr: str = Field("127.0.0.1", min_length=1, description="address of node 0, reachable from every node")
    master_port: int = Field(29500, ge=1024, le=65535, description="free TCP port on node 0 for the rendezvous")
    deepspeed: Literal[DEEPSPEED] = Field("none", description="DeepSpeed ZeRO stage: none, zero2, zero3, *_offload (to CPU)")


class RunConfig(_Section):
    """One training run. Load with :func:`tuitune.config.load_config`."""

    preset: Optional[str] = Field(None, description="the preset this config started from (the base of `config show`'s diff)")
    model: str = Field(..., min_length=1,
                       description="base model: a local folder (relative to the workspace) or a hub id")
    template: str = Field("auto", min_length=1,
                          description="prompt template: auto (the tokenizer's chat template) or a named one")
    task: Literal["sft", "pretrain", "dpo", "orpo", "grpo"] = Field(
        "sft", description="sft: learn answers to prompts; pretrain: learn plain text; dpo, orpo: learn to prefer "
                           "the chosen answer of a pair over the rejected one; grpo: learn from rewards on "
                           "sampled completions of prompts")
    method: Literal["full", "lora", "qlora"] = Field(
        "qlora", description="full: all weights; lora: adapter on a 16-bit model; qlora: adapter on a 4-bit model")
    trust_remote_code: bool = Field(False, description="run Python code shipped with the model (InternLM needs it); only for models you trust")
    data: DataConfig = Field(default_factory=DataConfig, description="training data")
    lora: LoraSection = Field(default_factory=LoraSection, description="LoRA adapter (methods lora and qlora)")
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig,
                                             description="loading the base model in 4/8 bits (method qlora)")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="the optimizer loop")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="evaluation during training")
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig,
                                         description="preference tuning (tasks dpo and orpo)")
    grpo: GrpoConfig = Field(default_factory=GrpoConfig, description="reinforcement learning from rewards (task grpo)")
    distributed: DistributedConfig = Field(default_factory=DistributedConfig, description="GPUs, nodes, DeepSpeed")
    notify: NotifyConfig = Field(default_factory=NotifyConfig, description="who hears when the run ends, fails or "
                                 "stalls (Apprise URLs), and what else the run may send out")

    # Where relative paths resolve, and where each key sits in the YAML it came from.
    _workspace: Optional[Path] = PrivateAttr(None)
    _source: Optional[Path] = PrivateAttr(None)
    _lines: dict = PrivateAttr(default_factory=dict)

    @field_validator("template")
    @classmethod
    def _known_template(cls, v: str) -> str:
        names = template_names()
        if names and v not in names:
            import difflib
            close = difflib.get_close_matches(v, names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown template {v!r}; {hint}choose one of: {', '.join(names)}")
        return v

    @model_validator(mode="after")
    def _across(self) -> "RunConfig":
        d = self.distributed
        if d.node_rank >= d.nnodes:
            raise ValueError(f"distributed.node_rank {d.node_rank} must be below distributed.nnodes {d.nnodes}")
        if self.is_preference:
            if self.data.pack:
                raise ValueError(f"data.pack: task {self.task} compares whole pairs, which are never packed; "
                                 "set data.pack: false")
            if self.task == "orpo" and self.preference.reference != "auto":
                raise ValueError(f"preference.reference {self.preference.reference}: orpo has no reference "
                                 "model; leave it auto, or use task: dpo")
        if self.task == "grpo":
            self._check_grpo()
        return self

    def _check_grpo(self) -> None:
        if self.data.pack:
            raise ValueError("data.pack: task grpo samples completions of each prompt, which are never packed; "
                             "set data.pack: false")
        n, t, world = self.grpo.num_generations, self.training, self.distributed.gpus * self.distributed.nnodes
        if self.effective_batch_size % n:
            raise ValueError(
                f"grpo.num_generations {n} must divide the global batch, which counts completions: training."
                f"batch_size {t.batch_size} × grad_accum {t.grad_accum} × {world} GPU(s) = "
                f"{self.effective_batch_size}; make it a multiple of {n} (e.g. batch_size {n}), or pick "
                f"num_generations among its divisors")
        if self.data.eval and self.evaluation.eval_loss and (t.batch_size * world) % n:
            raise ValueError(f"grpo.num_generations {n} must divide the evaluation batch, training.batch_size "
                             f"{t.batch_size} × {world} GPU(s); make batch_size a multiple of {n}, or set "
                             "evaluation.eval_loss: false")

    def __eq__(self, other: object) -> bool:
        # Equal values are equal configs, wherever they were loaded from (private attrs differ).
        if not isinstance(other, RunConfig):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    __hash__ = None  # mutable

    # --- paths ---------------------------------------------------------------------------
    @property
    def workspace(self) -> Path:
        return self._workspace or Path.cwd()

    def with_context(self, workspace: Path | None = None, source: Path | None = None,
                     lines: dict | None = None) -> "RunConfig":
        if workspace is not None:
            self._workspace = Path(workspace).expanduser().resolve()
        if source is not None:
            self._source = Path(source)
        if lines is not None:
            self._lines = dict(lines)
        return self

    def resolve(self, value: str | None) -> Path | None:
        """A path from the config, made absolute against the workspace."""
        if value in (None, ""):
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.workspace / p)

    def model_is_local(self) -> bool:
        """A folder rather than a hub id (``org/name``).

        Local: ``./x``, ``../x``, ``/x``, ``~/x``, anything under the workspace's ``models/``,
        or a path that exists in the workspace. Everything else is a hub id.
        """
        m = self.model
        if m.startswith((".", "/", "~")) or Path(m).expanduser().is_absolute():
            return True
        return m.split("/", 1)[0] == "models" or (self.workspace / m).exists()

    def model_path(self) -> str:
        """What ``from_pretrained`` gets: an absolute folder, or the hub id unchanged."""
        return str(self.resolve(self.model)) if self.model_is_local() else self.model

    def line_of(self, field: str) -> int | None:
        """The YAML line of a dotted field (or of its closest parent) in the file it was loaded from."""
        parts = tuple(field.split(".")) if field else ()
        while parts:
            if parts in self._lines:
                return self._lines[parts]
            parts = parts[:-1]
        return None

    @property
    def source(self) -> Path | None:
        return self._source

    # --- derived -------------------------------------------------------------------------
    @property
    def effective_batch_size(self) -> int:
        """Samples per optimizer step: batch × grad_accum × gpus × nnodes."""
        t, d = self.training, self.distributed
        return t.batch_size * t.grad_accum * d.gpus * d.nnodes

    @property
    def is_preference(self) -> bool:
        return self.task in PREFERENCE_TASKS

    @property
    def uses_adapter(self) -> bool:
        return self.method in ("lora", "qlora")


def template_names() -> tuple[str, ...]:
    """The named templates, once ``tuitune.templates`` exists (empty tuple before)."""
    if importlib.util.find_spec("tuitune.templates") is None:
        return ()
    try:
        from tuitune.templates import TEMPLATE_NAMES
    except Exception:
        return ()
    return tuple(TEMPLATE_NAMES)


SECTIONS: dict[str, type[BaseModel]] = {
    "data": DataConfig, "lora": LoraSection, "quantization": QuantizationConfig,
    "training": TrainingConfig, "evaluation": EvaluationConfig, "preference": PreferenceConfig,
    "grpo": GrpoConfig, "distributed": DistributedConfig, "notify": NotifyConfig,
}
TOP_FIELDS = ("preset", "model", "template", "task", "method", "trust_remote_code")


def iter_fields() -> Iterator[tuple[str, Any]]:
    """Every leaf field as (dotted name, pydantic FieldInfo), in file order."""
    for name in RunConfig.model_fields:
        if name in SECTIONS:
            for sub, info in SECTIONS[name].model_fields.items():
                yield f"{name}.{sub}", info
        else:
            yield name, RunConfig.model_fields[name]


def field_info(dotted: str):
    for name, info in iter_fields():
        if name == dotted:
            return info
    raise KeyError(dotted)


def describe(dotted: str) -> str:
    """The one-line description of a dotted field, or of a section."""
    if dotted in SECTIONS:
        return RunConfig.model_fields[dotted].description or ""
    return field_info(dotted).description or ""


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"training": {"lr": 1}} -> {"training.lr": 1} (sections only one level deep)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k in SECTIONS and isinstance(v, dict) and not prefix:
            out.update(flatten(v, k + "."))
        else:
            out[prefix + k] = v
    return out


def unflatten(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for k, v in flat.items():
        if "." in k:
            sec, sub = k.split(".", 1)
            out.setdefault(sec, {})[sub] = v
        else:
            out[k] = v
    return out
