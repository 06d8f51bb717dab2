"""What to load: the one resolver of a model spec, for chat, merge, evaluation and export.

A spec (:func:`resolve`) is one of:

- a model folder (``config.json``): a base model, a merged model or a full fine-tune;
- an adapter folder (``adapter_config.json``): on the base named by the run it sits
  in, else by its ``base_model_name_or_path``; or a model folder plus ``adapter=``;
- a run id (or a unique part of it, or its folder): its final ``adapter/`` (or
  ``model/``), on the base model of its ``config.yaml``; a run still training has no
  final adapter yet, so its latest complete checkpoint is used (and a note says so);
- ``RUN:checkpoint-N`` or ``RUN:N``: that checkpoint of the run; ``RUN:base``: the
  run's base model alone;
- a hub id (``org/name``), given to ``from_pretrained`` as it is.

``need="adapter"`` (merge, adapter export) asks for an adapter on a local base folder:
a run must have finished (or the checkpoint be named), and ``base=`` overrides the base.

A run's settings come with the source: its template, system prompt, evaluation prompts
and data files, read through :func:`tuitune.config.load_config` like everything else.
Light to import (no torch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tuitune.errors import FIELD, TuituneError
from tuitune.workspace import Workspace, has_tokenizer, is_adapter_dir, is_model_dir

MODEL_HELP = ("a model folder (config.json), an adapter folder (adapter_config.json), a run id, "
              "RUN:checkpoint-N or RUN:base")
#: The fix where a merge needs another base, as the TUI says it (its Merge step has no base field).
SHELL_BASE = "merge from a shell with `tuitune merge RUN --base DIR`"


@dataclass
class ModelSource:
    """Where a model comes from: a base (folder or hub id), maybe an adapter on it, and its run."""

    base: str                          # an absolute folder, or a hub id
    adapter: Path | None = None
    label: str = ""                    # short: the run id, RUN:checkpoint-N, folder names
    template: str | None = None        # the run's template, when a run is loaded
    trust_remote_code: bool = False
    run: str | None = None             # the run's id
    run_dir: Path | None = None
    checkpoint: int | None = None      # the run's checkpoint step, when a checkpoint is loaded
    method: str | None = None          # full / lora / qlora, from the run's config
    system: str = ""                   # the run's data.system: what the model was trained with
    config_path: Path | None = None    # the run's config.yaml
    data_files: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.label:
            self.label = Path(self.base).name + (f" + {self.adapter.name}" if self.adapter else "")

    @property
    def base_dir(self) -> Path:
        """The base as a folder (``need="adapter"`` guarantees there is one)."""
        return Path(self.base)

    @property
    def tokenizer_dir(self) -> Path:
        """The adapter's own tokenizer (training saves it there) if it has one, else the base's."""
        if self.adapter is not None and has_tokenizer(self.adapter):
            return self.adapter
        return Path(self.base)

    def describe(self) -> str:
        """A sentence's worth: ``run R (checkpoint 4)``, ``run R (final adapter)`` or the adapter folder."""
        if self.run_dir is not None and self.adapter is not None:
            what = f"checkpoint {self.checkpoint}" if self.checkpoint is not None else "final adapter"
            return f"run {self.run_dir.name} ({what})"
        return str(self.adapter) if self.adapter is not None else self.label


def _run_of(p: Path):
    """The run folder holding ``p`` (an adapter or a checkpoint inside runs/<id>/), or None."""
    from tuitune.train.runfolder import RunFolder

    for parent in [p, *p.parents][:4]:
        if (parent / "config.yaml").is_file() and ((parent / "state.json").is_file() or parent.parent.name == "runs"):
            return RunFolder(parent)
    return None


def _with_run(src: ModelSource, run, workspace) -> tuple[ModelSource, object]:
    """Fill in what the run's frozen config says (template, system prompt, prompts, data)."""
    from tuitune.config import load_config

    state = run.read_state()
    ws = state.get("workspace") or (str(run.path.parent.parent) if run.path.parent.name == "runs" else workspace)
    if not run.config_path.is_file():
        raise TuituneError(f"{run.path}: the run has no config.yaml, so its base model is unknown; "
                           "load its adapter with --adapter on the base model folder")
    cfg = load_config(run.config_path, workspace=ws)
    src.template, src.trust_remote_code, src.system = cfg.template, cfg.trust_remote_code, cfg.data.system or ""
    src.run, src.run_dir, src.method, src.config_path = run.id, run.path, cfg.method, run.config_path
    src.prompts = list(cfg.evaluation.prompts)
    src.data_files = [s.path for s in cfg.data.sources()] + ([cfg.data.eval] if cfg.data.eval else [])
    return src, cfg


def _checkpoint_names(run) -> str:
    return ", ".join(p.name for p in run.list_checkpoints()) or "none yet"


def _from_run(run, workspace, selector: str | None, need: str | None) -> ModelSource:
    src, cfg = _with_run(ModelSource(".", label=run.id), run, workspace)
    src.base = cfg.model_path()
    if selector == "base":
        if need == "adapter":
            raise TuituneError(f"{run.id}:base is the base model alone; there is no adapter to merge")
        src.label = f"{run.id}:base"
        return src
    if selector in (None, "", "final", "adapter", "latest"):
        if selector != "latest":
            if is_adapter_dir(run.adapter_dir):
                src.adapter = run.adapter_dir
                return src
            if is_model_dir(run.model_dir):
                if need == "adapter":
                    raise TuituneError(f"run {run.id} is a full fine-tune: {run.model_dir} is already a "
                                       "standalone model, there is no adapter to merge")
                src.base = str(run.model_dir)
                return src
        cp = run.latest_checkpoint()
        status = run.status().get("status", "unknown")
        if need == "adapter" and selector != "latest":
            hint = f"; name a checkpoint: {run.id}:{cp.name}" if cp is not None else ""
            raise TuituneError(f"run {run.id} has no final adapter ({run.adapter_dir} is missing: the run is "
                               f"{status}){hint}")
        if cp is None:
            raise TuituneError(f"run {run.id} ({status}) has no final adapter and no complete checkpoint yet; "
                               "wait for its first checkpoint (training.save_steps) or pick another run")
        if selector != "latest":
            src.notes.append(f"run {run.id} has no final adapter yet ({status}): using its latest checkpoint, "
                             f"{cp.name}")
    else:
        step = selector.removeprefix("checkpoint-").removeprefix("checkpoint")
        if not step.isdigit():
            raise TuituneError(f"{run.id}:{selector}: after the colon give base, checkpoint-N or N; "
                               f"checkpoints: {_checkpoint_names(run)}")
        cp = run.checkpoints / f"checkpoint-{int(step)}"
        if cp not in run.list_checkpoints():
            raise TuituneError(f"run {run.id} has no complete checkpoint-{int(step)}; "
                               f"checkpoints: {_checkpoint_names(run)}")
    src.label, src.checkpoint = f"{run.id}:{cp.name}", int(cp.name.rsplit("-", 1)[-1])
    if is_adapter_dir(cp):
        src.adapter = cp
        return src
    if is_model_dir(cp):
        if need == "adapter":
            raise TuituneError(f"{cp} holds full weights (a full fine-tune), there is no adapter to merge")
        src.base = str(cp)
        return src
    raise TuituneError(f"{cp}: neither model weights (config.json) nor an adapter (adapter_config.json)")


def _adapter_source(adapter: Path, workspace) -> ModelSource:
    run = _run_of(adapter)
    if run is not None:
        src, cfg = _with_run(ModelSource(".", adapter), run, workspace)
        src.base = cfg.model_path()
        src.label = run.id if adapter == run.adapter_dir else f"{run.id}:{adapter.name}"
        if adapter.parent == run.checkpoints and adapter.name.rsplit("-", 1)[-1].isdigit():
            src.checkpoint = int(adapter.name.rsplit("-", 1)[-1])
        return src
    try:
        base = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise TuituneError(f"{adapter / 'adapter_config.json'}: unreadable ({exc}); save the adapter again with "
                           "save_pretrained") from None
    if not base:
        raise TuituneError(f"{adapter}: adapter_config.json names no base model; "
                           "give the base model folder (--base, or MODEL with this folder as --adapter)")
    bp = _local_model(base, adapter, workspace)
    return ModelSource(str(bp) if bp is not None else base, adapter, f"{Path(base).name} + {adapter.name}")


def _local(spec: str, workspace) -> Path | None:
    p = Path(spec).expanduser()
    if p.exists():
        return p.resolve()
    if not p.is_absolute() and (Path(workspace) / p).exists():
        return (Path(workspace) / p).resolve()
    return None


def _local_model(name: str | None, *roots: Path) -> Path | None:
    """A folder with ``config.json`` called ``name``, as it is or under one of ``roots``."""
    if not name:
        return None
    p = Path(name).expanduser()
    for cand in ([p] if p.is_absolute() else [Path(r) / p for r in roots if r is not None] + [p]):
        if is_model_dir(cand):
            return cand.resolve()
    return None


def looks_like_hub_id(spec: str, workspace=".") -> bool:
    """``org/name``, unless ``org`` is a folder here or a workspace folder (models/x is a path)."""
    parts = spec.split("/")
    if len(parts) != 2 or not all(parts) or spec.startswith((".", "/", "~")) or "\\" in spec:
        return False
    return parts[0] not in ("models", "runs", "data", "configs") and not (Path(workspace) / parts[0]).exists() \
        and not Path(parts[0]).exists()


def resolve(spec: str, workspace: str | Path = ".", *, adapter: str | Path | None = None,
            checkpoint: int | str | None = None, base: str | Path | None = None,
            need: str | None = None) -> ModelSource:
    """What ``spec`` names (see the module docstring); TuituneError naming it when it is none of them.

    ``need="adapter"``: an adapter on a local base folder (merge); ``base`` then replaces the base.
    """
    src = _resolve(spec, Path(workspace), adapter, checkpoint, need)
    if need == "adapter":
        if src.adapter is None:
            raise TuituneError(f"{spec}: a model folder with no adapter, so there is nothing to merge; give a run id, "
                               "RUN:checkpoint-N or an adapter folder (adapter_config.json)")
        if base:
            b = _local_model(str(base), Path.cwd(), Path(workspace))
            if b is None:
                raise TuituneError(f"{FIELD} {base}: no model folder with config.json there; give the folder of the "
                                   "base model the adapter was trained on", field="base")
            src.base = str(b)
        elif not is_model_dir(Path(src.base)) and src.config_path is not None:
            raise TuituneError(f"{src.config_path}: the run's base model {src.base} is not a model folder (no "
                               "config.json); put the model back there, or ", field="base",
                               fix=f"pass {FIELD} DIR", tui_fix=SHELL_BASE)
        elif not is_model_dir(Path(src.base)):
            raise TuituneError(f"{src.adapter / 'adapter_config.json'}: base model {src.base!r} is not a local "
                               "folder; download it and ", field="base", fix=f"pass {FIELD} DIR",
                               tui_fix=SHELL_BASE)
    elif base:
        raise TuituneError("--base goes with merge; to chat with an adapter on a base give MODEL --adapter DIR")
    return src


def _resolve(spec, workspace: Path, adapter, checkpoint, need) -> ModelSource:
    from tuitune.train.runfolder import RunFolder, find_run

    spec = str(spec).strip()
    if not spec:
        raise TuituneError(f"no model given; give {MODEL_HELP}")
    path = _local(spec, workspace)
    run = selector = None
    if path is None and ":" in spec:
        head, _, selector = spec.rpartition(":")
        run = find_run(workspace, head)
    elif path is not None and path.is_dir() and not is_model_dir(path) and not is_adapter_dir(path) \
            and (path / "config.yaml").is_file():
        run = RunFolder(path)
    if run is None and path is None:
        try:
            run = find_run(workspace, spec)
        except TuituneError as exc:
            if looks_like_hub_id(spec, workspace) and adapter is None and checkpoint is None:
                return ModelSource(spec, None, spec)
            if "/" in spec or "\\" in spec or spec.startswith("~"):  # a path, not a run id: say so, list the models
                where = "here" if Path(workspace).resolve() == Path.cwd() else f"here or in the workspace {workspace}"
                models = ", ".join(f"models/{p.name}" for p in Workspace(Path(workspace)).model_dirs()) or "none yet"
                raise TuituneError(f"{spec}: no such folder {where} (models in the workspace: {models}); "
                                   f"give {MODEL_HELP}, or a hub id such as org/name")
            raise TuituneError(f"{spec}: no such folder, and {exc}; give {MODEL_HELP}") from None
    if run is not None:
        if adapter is not None:
            raise TuituneError(f"{spec} is a run, which brings its own adapter; give {FIELD} with a model folder",
                               field="adapter")
        if checkpoint is not None:
            if selector:
                raise TuituneError(f"{spec}: give the checkpoint once, either as RUN:checkpoint-N or {FIELD} N",
                                   field="checkpoint")
            selector = f"checkpoint-{checkpoint}"
        return _from_run(run, workspace, selector, need)
    assert path is not None
    if checkpoint is not None:
        raise TuituneError(f"{FIELD} {checkpoint} needs a run, and {spec} is a folder; "
                           "give the run id (or the checkpoint folder itself)", field="checkpoint")
    if not path.is_dir():
        raise TuituneError(f"{path}: not a folder; give {MODEL_HELP}")
    if is_model_dir(path):
        src = ModelSource(str(path), None, path.name)
        run = _run_of(path)
        if run is not None:  # a full fine-tune's model/ or checkpoint: use the run's template
            try:
                src, _cfg = _with_run(src, run, workspace)
                src.label = run.id if path == run.model_dir else f"{run.id}:{path.name}"
            except TuituneError:
                pass
        if adapter is not None:
            ad = _local(str(adapter), workspace)
            if ad is None or not is_adapter_dir(ad):
                raise TuituneError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json); "
                                   "give the folder a run saved as adapter/ or checkpoints/checkpoint-N/")
            src.adapter = ad
            src.label = f"{path.name} + {ad.parent.name + '/' if ad.name == 'adapter' else ''}{ad.name}"
        return src
    if is_adapter_dir(path):
        if adapter is not None:
            raise TuituneError(f"{path} is already an adapter; give the base model folder as MODEL and it as {FIELD}",
                               field="adapter")
        return _adapter_source(path, workspace)
    raise TuituneError(f"{path}: not a model folder (no config.json), not an adapter (no adapter_config.json) "
                       f"and not a run; give {MODEL_HELP}")


# What makes a folder a model, an adapter or a tokenizer is tuitune.workspace's (is_model_dir, ...).
__all__ = ["ModelSource", "MODEL_HELP", "SHELL_BASE", "resolve", "looks_like_hub_id"]
