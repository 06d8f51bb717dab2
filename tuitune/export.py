"""Export: a run, adapter or model folder → a GGUF file (llama.cpp) or an Ollama folder.

A run or adapter is merged first (:func:`tuitune.merge.merge`: streamed, verified) into a
temporary folder; a model folder is converted as it is. The GGUF is written by llama.cpp's
own converter, ``convert_hf_to_gguf.py``, never by code here: from a llama.cpp checkout
(``--llama-cpp DIR`` or ``LLAMA_CPP_DIR``), else from the ``llama-cpp-python`` source
package, which vendors llama.cpp with the converter and its ``gguf-py`` (downloaded with
``pip download --no-deps``, pinned, unpacked once into the cache; its compiled parts are
never built). The file is then read back with the ``gguf`` package and checked against
the source: architecture, tensor count, tokenizer, and the chat template (which training
saved in the tokenizer, so the served model renders the format it was trained on).

``ollama``: a folder with the GGUF and a ``Modelfile``: ``FROM``, ``TEMPLATE`` in Ollama's
Go-template syntax built from the same template, ``PARAMETER stop`` for each stop word,
``SYSTEM`` with the run's system prompt (``data.system``), else the one the chat template puts in by
itself (SmolLM2's, Qwen2.5's), as training rendered it, and the ``ollama create`` line to run.
The output appears only when complete (``OUT.partial-*`` renamed at the end).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tuitune.errors import TuituneError

FORMATS = ("gguf", "ollama")
OUTTYPES = ("f16", "bf16", "q8_0")
#: The llama-cpp-python source package whose vendored llama.cpp provides the converter.
LLAMA_CPP_PYTHON = "llama-cpp-python==0.3.36"


@dataclass
class ExportResult:
    out: Path
    gguf: Path
    bytes: int
    outtype: str
    architecture: str
    tensors: int
    checks: list[str] = field(default_factory=list)
    seconds: float = 0.0
    merged: bool = False
    command: str = ""         # how to run it

    def to_dict(self) -> dict:
        d = asdict(self)
        d["out"], d["gguf"] = str(self.out), str(self.gguf)
        return d


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


def _convert(converter: Path, model_dir: Path, outfile: Path, outtype: str, label: str) -> None:
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


# --- Ollama -------------------------------------------------------------------------------------

def _go_text(text: str, what: str) -> str:
    if "{{" in text or '"""' in text:
        raise TuituneError(f"the template's {what} ({text!r}) holds '{{{{' or '\"\"\"', which an Ollama TEMPLATE "
                           "cannot hold literally; export --format gguf and write the TEMPLATE by hand")
    return text


def ollama_template(tokenizer, template: str) -> tuple[str, str]:
    """(Go template, the named template it was built from); TuituneError naming what cannot be expressed."""
    from tuitune.templates import TEMPLATES, get_template, render_prompt

    name = template
    if template == "auto":
        probe = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
                 {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
        own = render_prompt(tokenizer, "auto", probe)
        bos = tokenizer.bos_token or ""

        def rendered(n):  # without a leading BOS: llama.cpp adds it from the GGUF, Ollama's template does not
            text = render_prompt(tokenizer, n, probe)
            return text[len(bos):] if bos and text.startswith(bos) and not own.startswith(bos + bos) else text

        name = next((n for n in TEMPLATES if rendered(n) == own or rendered(n) == own.removeprefix(bos)), None)
        if name is None:
            raise TuituneError("the tokenizer's own chat template (jinja) renders as none of the named templates, "
                               "so it has no Go-template form here; export --format gguf (the GGUF carries the "
                               "jinja template), or train with a named template")
    tpl = get_template(name)
    for part, text in (("system wrapper", tpl.system), ("instruction", tpl.instruction)):
        if "{round}" in text:
            raise TuituneError(f"template {name}: its {part} numbers the turns ({{round}}), which Ollama's "
                               "template has no value for; export --format gguf instead")
    sys_pre, _, sys_post = tpl.system.partition("{system}")
    ins_pre, _, ins_post = tpl.instruction.partition("{input}")
    eos = "" if tpl.suffix_as_eos else (tokenizer.eos_token or "")
    body = ("{{- if .System }}" + _go_text(sys_pre, "system wrapper") + "{{ .System }}" + _go_text(sys_post, "system "
            "wrapper") + "{{ end }}{{- range $i, $_ := .Messages }}{{- if eq .Role \"user\" }}"
            + _go_text(ins_pre, "instruction") + "{{ .Content }}" + _go_text(ins_post, "instruction")
            + "{{ else if eq .Role \"assistant\" }}{{ .Content }}" + _go_text(tpl.suffix + eos + tpl.sep, "suffix")
            + "{{ end }}{{ end }}")  # no {{- after literal text: it would trim the template's own newlines
    return body, name


def default_system_prompt(tokenizer) -> str:
    """The system prompt the tokenizer's own chat template puts in when a conversation has none, or "".

    SmolLM2's template adds "You are a helpful AI assistant named SmolLM, ...", Qwen2.5's "You are
    Qwen, ..."; a run with template ``auto`` and no ``data.system`` trained with it. Found by
    rendering the template with a marker as the system prompt and with none: the default is the
    text standing where the marker stood, and rendering it as the system prompt gives the same text.
    """
    from tuitune.templates import render_prompt

    question = [{"role": "user", "content": "Q"}]
    marker = "\u2063SYSTEM\u2063"

    def render(system: str | None) -> str:
        return render_prompt(tokenizer, "auto", ([{"role": "system", "content": system}] if system is not None
                                                 else []) + question)

    try:
        pre, found, post = render(marker).partition(marker)
        without = render(None)
        if not found or len(without) < len(pre) + len(post) or not (without.startswith(pre) and
                                                                       without.endswith(post)):
            return ""
        default = without[len(pre):len(without) - len(post)]
        return default if default and render(default) == without else ""
    except TuituneError:   # no chat template, or one that takes no system message
        return ""


def modelfile(gguf_name: str, go_template: str, stops: list[str], system: str) -> str:
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{go_template}"""']
    lines += [f"PARAMETER stop {_quote(s)}" for s in stops]
    if system:
        lines.append(f'SYSTEM """{_go_text(system, "system prompt")}"""')
    return "\n".join(lines) + "\n"


def ollama_modelfile(tokenizer, template: str, system: str, gguf_name: str,
                     log: Callable[[str], None] = lambda s: None) -> str:
    """The Modelfile for ``gguf_name``: the Go template, the stop words, and the system prompt training
    used: ``system`` (the run's ``data.system``), else for ``auto`` the template's own default."""
    from tuitune.templates import stop_words

    go, named = ollama_template(tokenizer, template)
    if not system and template == "auto":
        # Training rendered each record with the template's own default system prompt; Ollama adds a
        # system block only when it has one, so the Modelfile's SYSTEM carries it.
        system = default_system_prompt(tokenizer)
        if system:
            log(f"Modelfile SYSTEM: the chat template's default system prompt ({system[:60]!r}), which training "
                "put before every conversation")
    return modelfile(gguf_name, go, stop_words(tokenizer, named), system)


def _quote(s: str) -> str:
    import json

    return json.dumps(s, ensure_ascii=False)


# --- the export ---------------------------------------------------------------------------------

def export(spec: str, out: str | Path, *, workspace: str | Path = ".", fmt: str = "gguf", outtype: str = "f16",
           force: bool = False, llama_cpp: str | Path | None = None, name: str | None = None,
           log: Callable[[str], None] = lambda s: None, on_progress=None) -> ExportResult:
    """Merge if needed, convert with llama.cpp, check, write the Ollama folder; returns what was written."""
    from tuitune.fsutil import fix_modes, make_temp_dir, publish_dir, refuse_existing, slug
    from tuitune.sources import resolve

    if fmt not in FORMATS:
        raise TuituneError(f"--format {fmt}: choose {' or '.join(FORMATS)}")
    if outtype not in OUTTYPES:
        raise TuituneError(f"--type {outtype}: choose one of {', '.join(OUTTYPES)}")
    out = Path(out).expanduser().absolute()   # as typed: relative to the folder the user is in
    refuse_existing(out, force=force, folder=fmt == "ollama")
    src = resolve(spec, workspace)
    if src.adapter is None and not (Path(src.base) / "config.json").is_file():
        raise TuituneError(f"{spec}: {src.base} is not a local model folder; download it first")
    if src.adapter is None and '"quantization_config"' in (Path(src.base) / "config.json").read_text(encoding="utf-8"):
        raise TuituneError(f"{src.base}: the model is stored quantized; export its 16-bit original")
    converter = find_converter(llama_cpp, log)   # before a merge: a missing converter fails fast
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
        gguf_name = f"{name or out.name}-{outtype}.gguf" if fmt == "ollama" else out.name
        gguf_path = tmp / gguf_name
        if fmt == "ollama":  # a template Ollama cannot take fails before the conversion
            from transformers import AutoTokenizer

            mf = ollama_modelfile(AutoTokenizer.from_pretrained(model_dir), src.template or "auto", src.system,
                                  gguf_name, log)
        log(f"converting with llama.cpp's convert_hf_to_gguf.py ({outtype})")
        _convert(converter, model_dir, gguf_path, outtype,
                 f"{spec} (merged)" if src.adapter is not None else str(model_dir))
        arch, n, checks = check_gguf(gguf_path, model_dir)
        result = ExportResult(out=out, gguf=out if fmt == "gguf" else out / gguf_name, bytes=gguf_path.stat().st_size,
                              outtype=outtype, architecture=arch, tensors=n, checks=checks,
                              merged=src.adapter is not None)
        if fmt == "ollama":
            folder = tmp / "ollama"
            folder.mkdir()
            os.replace(gguf_path, folder / gguf_name)
            (folder / "Modelfile").write_text(mf, encoding="utf-8")
            fix_modes(folder)
            publish_dir(folder, out)
            result.command = f"ollama create {slug((name or out.name).lower(), 'model')} -f {out / 'Modelfile'}"
        else:
            fix_modes(gguf_path)
            if out.exists() and force:
                out.unlink()
            os.replace(gguf_path, out)
            result.command = f"llama-cli -m {out} -cnv"
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


__all__ = ["export", "find_converter", "check_gguf", "ollama_template", "default_system_prompt", "modelfile",
           "ollama_modelfile", "ExportResult", "FORMATS", "OUTTYPES"]
