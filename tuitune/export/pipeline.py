"""The steps every export format shares: resolve, merge first, write, publish, clean up.

A run or adapter is merged first (:func:`tuitune.merge.merge`: streamed, verified) into the
temporary folder; a model folder is exported as it is. The format's ``write`` then fills the
temporary folder (``OUT.partial-*`` beside OUT), calling :meth:`ExportJob.gguf` where it holds a
GGUF (llama.cpp's converter, then the file read back and checked). The output appears only when
complete: a file is renamed into place, a folder published whole (an existing one moved aside,
never deleted); on any failure the temporary folder goes, and so do the folders made for OUT.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tuitune.errors import FIELD, TuituneError
from tuitune.export.llamacpp import OUTTYPES, check_gguf, convert, find_converter
from tuitune.export.registry import ExportFormat, get_format
from tuitune.export.runtime import check_runtime as run_check, require_runtime


@dataclass
class ExportResult:
    out: Path
    gguf: Path | None         # the GGUF written (OUT itself, or the one in OUT); None for a format without one
    bytes: int
    outtype: str
    architecture: str
    tensors: int
    checks: list[str] = field(default_factory=list)
    seconds: float = 0.0
    merged: bool = False
    command: str = ""         # how to run it
    runtime: dict | None = None   # --check-runtime: RuntimeCheck.to_dict(), its "line" the one to print

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"], d["gguf"] = str(self.out), None if self.gguf is None else str(self.gguf)
        return d


@dataclass
class ExportJob:
    """What a format's ``write`` works from; :meth:`gguf` is the shared conversion step."""

    spec: str
    format: ExportFormat
    model_dir: Path           # the model to export: the source folder, or the merge in tmp
    tmp: Path                 # the temporary folder to write into
    out: Path                 # where the output will be (absolute): for run lines
    outtype: str
    name: str | None          # --name: the model's name where the format names it
    template: str             # the run's chat template ("auto": the tokenizer's own)
    system: str               # the run's system prompt (data.system), or ""
    merged: bool
    converter: Path | None = None
    log: Callable[[str], None] = lambda s: None
    architecture: str = ""
    tensors: int = 0
    checks: list[str] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        """--name, else the output's name."""
        return self.name or self.out.name

    def gguf(self, path: Path) -> Path:
        """Convert the model to ``path`` with llama.cpp's converter and read it back (the checks)."""
        if self.converter is None:
            raise ValueError(f"export format {self.format.name} declares gguf=False, so no converter was found")
        self.log(f"converting with llama.cpp's convert_hf_to_gguf.py ({self.outtype})")
        convert(self.converter, self.model_dir, path, self.outtype,
                f"{self.spec} (merged)" if self.merged else str(self.model_dir))
        self.architecture, self.tensors, self.checks = check_gguf(path, self.model_dir)
        return path


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def export(spec: str, out: str | Path, *, workspace: str | Path = ".", fmt: str = "gguf", outtype: str = "f16",
           force: bool = False, llama_cpp: str | Path | None = None, name: str | None = None,
           check_runtime: bool = False, log: Callable[[str], None] = lambda s: None,
           on_progress=None) -> ExportResult:
    """Merge if needed, then write ``fmt`` (converted and checked where it holds a GGUF); returns what was written.

    ``check_runtime``: before the output is published, the GGUF runs in llama.cpp against tuitune
    chat on the source (:func:`tuitune.export.runtime.check_runtime`); without llama-cpp-python
    the export stops before writing anything."""
    from tuitune.fsutil import fix_modes, make_temp_dir, publish_dir, refuse_existing
    from tuitune.sources import resolve

    form = get_format(fmt)
    if outtype not in OUTTYPES:
        raise TuituneError(f"{FIELD} {outtype}: choose one of {', '.join(OUTTYPES)}", field="type")
    if check_runtime:
        if not form.gguf:
            raise TuituneError(f"{FIELD} runs the GGUF in llama.cpp; --format {fmt} holds none", field="check_runtime")
        require_runtime()   # before anything is written
    out = Path(out).expanduser().absolute()   # as typed: relative to the folder the user is in
    refuse_existing(out, force=force, folder=form.kind == "folder")
    src = resolve(spec, workspace)
    if src.adapter is None and not (Path(src.base) / "config.json").is_file():
        raise TuituneError(f"{spec}: {src.base} is not a local model folder; download it first")
    if src.adapter is None and '"quantization_config"' in (Path(src.base) / "config.json").read_text(encoding="utf-8"):
        raise TuituneError(f"{src.base}: the model is stored quantized; export its 16-bit original")
    converter = find_converter(llama_cpp, log) if form.gguf else None   # before a merge: a missing one fails fast
    t0 = time.time()
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # removed again on a failure
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(prefix=f".{out.name}.partial-", dir=out.parent)
    try:
        model_dir = Path(src.base)
        if src.adapter is not None:
            from tuitune.merge import merge

            log(f"merging {src.describe()} (streamed, verified)")
            merge(resolve(spec, workspace, need="adapter"), tmp / "merged", on_progress=on_progress, log=log)
            model_dir = tmp / "merged"
        job = ExportJob(spec=spec, format=form, model_dir=model_dir, tmp=tmp, out=out, outtype=outtype, name=name,
                        template=src.template or "auto", system=src.system, merged=src.adapter is not None,
                        converter=converter, log=log)
        written = form.write(job)
        gguf = None if written.gguf is None else out if written.gguf == written.path else \
            out / written.gguf.relative_to(written.path)
        result = ExportResult(out=out, gguf=gguf, bytes=_size(written.gguf or written.path), outtype=outtype,
                              architecture=job.architecture, tensors=job.tensors, checks=job.checks,
                              merged=job.merged, command=written.command)
        if check_runtime:   # on the file in the temporary folder: a failed check publishes nothing
            result.runtime = run_check(written.gguf, spec, workspace=workspace, log=log).to_dict()
        fix_modes(written.path)
        if form.kind == "folder":
            publish_dir(written.path, out)
        else:
            if out.exists() and force:
                out.unlink()
            os.replace(written.path, out)
        result.seconds = round(time.time() - t0, 1)
        return result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:   # innermost first; a folder something else wrote into stays
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["export", "ExportJob", "ExportResult"]
