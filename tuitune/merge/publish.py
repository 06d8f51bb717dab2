"""The merge as a whole: plan, stream, verify, then the folder appears (and adapter export, the list)."""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
import json
from pathlib import Path
from typing import Callable

from tuitune.errors import FIELD, Note, TuituneError
from tuitune.fsutil import atomic_write_json, atomic_write_text, fix_modes, make_temp_dir, publish_dir, refuse_existing
from tuitune.hardware import DTYPE_NAMES
from tuitune.merge.plan import CARD_JSON, DTYPES, FROM_TORCH, TOKENIZER_FILES, Plan, Progress, make_plan, read_json
from tuitune.merge.shards import import_in_background, imports_ready, peft_merge, stream_merge
from tuitune.merge.verify import Verification, verify
from tuitune.sources import ModelSource
from tuitune.units import human_size, parse_size


@dataclass
class MergeResult:
    out: Path
    shards: int
    tensors: int
    bytes: int
    dtype: str
    streamed: bool
    fallback: str | None
    untied: bool
    seconds: float
    verification: Verification | None
    replaced_to: Path | None = None
    verify_note: str | None = None      # why verification did not run

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        d["replaced_to"] = str(self.replaced_to) if self.replaced_to else None
        return d


def _dtype_name(bcfg: dict, plan: Plan | None) -> str:
    name = str(bcfg.get("dtype") or bcfg.get("torch_dtype") or "").replace("torch.", "")
    if name in FROM_TORCH:
        return FROM_TORCH[name]
    if plan and plan.dtypes:
        first = next(iter(plan.dtypes.values()))
        return {"F16": "fp16", "BF16": "bf16"}.get(first, "fp32")
    return "fp32"


def _copy_side_files(src: ModelSource, tmp: Path, untie: bool, dtype: str) -> None:
    bcfg = read_json(src.base_dir / "config.json", "the base model folder is incomplete")
    bcfg.pop("quantization_config", None)
    key = "dtype" if "dtype" in bcfg or "torch_dtype" not in bcfg else "torch_dtype"
    bcfg[key] = DTYPE_NAMES[dtype]
    if untie:
        bcfg["tie_word_embeddings"] = False
    atomic_write_json(tmp / "config.json", bcfg)
    gen = (json.loads((src.base_dir / "generation_config.json").read_text(encoding="utf-8"))
           if (src.base_dir / "generation_config.json").is_file() else None)
    stops = template_stop_ids(src)
    if gen is not None or stops:
        # A server stops where chat does: on the template's end-of-turn token(s) as well as EOS.
        gen = gen or {}
        have = gen.get("eos_token_id")
        have = [have] if isinstance(have, int) else list(have or [])
        gen["eos_token_id"] = list(dict.fromkeys(have + stops)) if stops else gen.get("eos_token_id")
        atomic_write_json(tmp / "generation_config.json", gen)
    for p in src.base_dir.glob("*.py"):   # remote code the config may point at
        shutil.copy2(p, tmp / p.name)
    copy_tokenizer(src.tokenizer_dir, tmp)


def template_stop_ids(src: ModelSource) -> list[int]:
    """The ids of the template's end-of-turn words that are single special tokens, and EOS."""
    imports_ready()
    from transformers import AutoTokenizer

    from tuitune.generation import special_stop_ids
    from tuitune.templates import stop_words

    try:
        tok = AutoTokenizer.from_pretrained(src.tokenizer_dir, trust_remote_code=src.trust_remote_code)
        return special_stop_ids(tok, stop_words(tok, src.template or "auto"))[0]
    except (OSError, ValueError, TuituneError):
        return []


def copy_tokenizer(from_dir: Path, to_dir: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (from_dir / name).is_file():
            shutil.copy2(from_dir / name, to_dir / name)
            copied.append(name)
    return copied



def model_card(src: ModelSource, result: MergeResult) -> str:
    lines = [
        "---", "library_name: transformers", f"base_model: {src.base_dir}", "tags: [tuitune, lora, merged]", "---",
        "", f"# {result.out.name}", "",
        "A standalone model: a LoRA adapter merged into its base by `tuitune merge`. It loads with",
        "`AutoModelForCausalLM.from_pretrained` and needs no peft.", "",
        f"- **base model**: `{src.base_dir}`",
        f"- **adapter**: `{src.adapter}` ({src.describe()})",
    ]
    if src.config_path:
        lines.append(f"- **run config**: `{src.config_path}`")
    if src.data_files:
        lines.append("- **data**: " + ", ".join(f"`{d}`" for d in src.data_files))
    if src.method == "qlora":
        lines.append("- **QLoRA**: the adapter was trained on the 4-bit base and merged into the 16-bit base weights")
    lines += [
        f"- **dtype**: {result.dtype}; {result.shards} shard(s), {result.tensors} tensors, {human_size(result.bytes)}",
        f"- **tokenizer**: from `{src.tokenizer_dir}`; chat template: "
        + (f"`{src.template}`, as the run trained with it" if src.template and src.template != "auto"
           else "the tokenizer's own"),
        "- **merge**: " + ("streamed shard by shard" if result.streamed
                           else f"peft merge_and_unload (fallback: {result.fallback})"),
    ]
    if result.untied:
        lines.append("- **embeddings**: untied (the adapter changed the input embeddings and the output head differently)")
    v = result.verification
    lines.append(f"- **{v.line()}**" if v else f"- **verification**: {result.verify_note or 'skipped'}")
    return "\n".join(lines) + "\n"


def merge(src: ModelSource, out: str | Path, *, max_shard_size: str | int = "2GB", dtype: str | None = None,
          force: bool = False, verify_result: bool = True, on_progress: Progress | None = None,
          log: Callable[[str], None] | None = None, cancelled: Callable[[], bool] | None = None) -> MergeResult:
    """Merge ``src`` into a standalone model folder ``out``; see the module docstring."""
    log = log or (lambda s: None)
    out = Path(out).expanduser().absolute()
    if dtype is not None and dtype not in DTYPES:
        raise TuituneError(f"{FIELD} {dtype}: choose one of {', '.join(DTYPES)}", field="dtype")
    max_shard = parse_size(max_shard_size)
    refuse_existing(out, force, folder=True)
    if out.resolve() in (src.base_dir.resolve(), src.adapter.resolve()):
        raise TuituneError(f"{out}: is the base or adapter folder; choose a new output folder")
    t0 = time.monotonic()
    plan = make_plan(src, dtype)
    from tuitune.hardware import keep_bitsandbytes_out

    keep_bitsandbytes_out()  # a merge quantizes nothing; peft would import bitsandbytes (and its noise)
    if verify_result:
        import_in_background()
    bcfg = read_json(src.base_dir / "config.json", "the base model folder is incomplete")
    dtype = dtype or _dtype_name(bcfg, plan)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(prefix=f"{out.name}.partial-", dir=out.parent)  # the umask's mode, not 0700
    try:
        if plan.fallback is None:
            log(f"streaming {len(plan.shards)} base shard(s) from {src.base_dir}")
            n, tensors, size = stream_merge(src, plan, tmp, dtype, max_shard, on_progress, cancelled)
            _copy_side_files(src, tmp, plan.untie, dtype)
        else:
            log(f"cannot stream this layout ({plan.fallback}); falling back to peft merge_and_unload, "
                "which loads the whole base into memory")
            n, tensors, size = peft_merge(src, tmp, dtype, max_shard, on_progress)
            copy_tokenizer(src.tokenizer_dir, tmp)
        result = MergeResult(out=out, shards=n, tensors=tensors, bytes=size, dtype=dtype,
                             streamed=plan.fallback is None, fallback=plan.fallback, untied=plan.untie,
                             seconds=0.0, verification=None)
        if not verify_result:
            result.verify_note = Note(f"skipped ({FIELD})", field="verify", flag="--no-verify")
            log(Note(f"verification skipped ({FIELD})", field="verify", flag="--no-verify"))
        else:
            log("verifying: logits of the merged model vs base + adapter (peft)")
            result.verification = verify(src, tmp, dtype)
            log(result.verification.line())
            if not result.verification.ok:
                raise TuituneError(f"{result.verification.line()}; the merged model differs from base + adapter, "
                                   "so it was not written (report this with the adapter_config.json)")
        result.seconds = time.monotonic() - t0
        atomic_write_text(tmp / "README.md", model_card(src, result))
        atomic_write_json(tmp / CARD_JSON, {"base": str(src.base_dir), "adapter": str(src.adapter),
                                            "run": str(src.run_dir) if src.run_dir else None,
                                            "checkpoint": src.checkpoint, "config": str(src.config_path or "") or None,
                                            "data": src.data_files, **result.to_dict()})
        fix_modes(tmp)  # safetensors and copy2 leave 0600 shards; files get what open() gives
        result.replaced_to = publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def export_adapter(src: ModelSource, out: str | Path, force: bool = False) -> Path:
    """A clean adapter folder (config, safetensors weights, tokenizer) ready to upload."""
    out = Path(out).expanduser().absolute()
    refuse_existing(out, force, folder=True)
    weights = src.adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise TuituneError(f"{src.adapter}: no adapter_model.safetensors to export; save the adapter again")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(prefix=f"{out.name}.partial-", dir=out.parent)
    try:
        acfg = read_json(src.adapter / "adapter_config.json", "save the adapter again")
        acfg["inference_mode"] = True
        atomic_write_json(tmp / "adapter_config.json", acfg)
        shutil.copy2(weights, tmp / "adapter_model.safetensors")
        copy_tokenizer(src.tokenizer_dir, tmp)
        lines = ["---", "library_name: peft", f"base_model: {src.base_dir}", "---", "",
                 f"# {out.name}", "", f"A LoRA adapter exported by `tuitune merge --export-adapter` from {src.describe()}.",
                 "", f"- **base model**: `{src.base_dir}`"]
        if src.config_path:
            lines.append(f"- **run config**: `{src.config_path}`")
        if src.data_files:
            lines.append("- **data**: " + ", ".join(f"`{d}`" for d in src.data_files))
        atomic_write_text(tmp / "README.md", "\n".join(lines) + "\n")
        fix_modes(tmp)
        publish_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --- what can be merged ----------------------------------------------------------------------

@dataclass
class SourceRow:
    """One adapter the Merge screen offers: a run's final adapter or one of its checkpoints."""

    run_id: str
    checkpoint: int | None
    status: str
    adapter: Path

    @property
    def key(self) -> str:
        return f"{self.run_id}::{'final' if self.checkpoint is None else self.checkpoint}"

    @property
    def what(self) -> str:
        return "final adapter" if self.checkpoint is None else f"checkpoint {self.checkpoint}"

    def default_output(self, workspace: Path) -> Path:
        tail = "merged" if self.checkpoint is None else f"step{self.checkpoint}-merged"
        return Path(workspace) / "models" / f"{self.run_id}-{tail}"


def list_sources(workspace: str | Path) -> list[SourceRow]:
    """The workspace's runs with an adapter (final first, then checkpoints newest first), newest runs first."""
    from tuitune.train.runfolder import list_runs

    rows: list[SourceRow] = []
    for run in list_runs(workspace):
        status = run.read_state().get("status", "unknown")
        if (run.adapter_dir / "adapter_config.json").is_file():
            rows.append(SourceRow(run.id, None, status, run.adapter_dir))
        for cp in reversed(run.list_checkpoints()):
            if (cp / "adapter_config.json").is_file():
                rows.append(SourceRow(run.id, int(cp.name.rsplit("-", 1)[-1]), status, cp))
    return rows
