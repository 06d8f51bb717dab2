"""``--format ollama``: a folder with the GGUF and a ``Modelfile``, for ``ollama create``.

The ``Modelfile``: ``FROM``, ``TEMPLATE`` in Ollama's Go-template syntax built from the run's
template, ``PARAMETER stop`` for each stop word, ``SYSTEM`` with the run's system prompt
(``data.system``), else the one the chat template puts in by itself (SmolLM2's, Qwen2.5's), as
training rendered it; the result gives the ``ollama create`` line to run.
"""

from __future__ import annotations

from typing import Callable

from tuitune.errors import TuituneError
from tuitune.export.registry import ExportFormat, Written


def _go_text(text: str, what: str) -> str:
    if "{{" in text or '"""' in text:
        raise TuituneError(f"the template's {what} ({text!r}) holds '{{{{' or '\"\"\"', which an Ollama TEMPLATE "
                           "cannot hold literally; export --format gguf and write the TEMPLATE by hand")
    return text


def ollama_template(tokenizer, template: str, bos_added: bool = False) -> tuple[str, str]:
    """(Go template, the named template it was built from); TuituneError naming what cannot be expressed.

    The BOS training put first (a named template on a tokenizer that has one, or an ``auto`` template
    that writes it) is in the Go template unless ``bos_added``: the runtime adds it itself, as llama.cpp
    and Ollama do where the GGUF's ``tokenizer.ggml.add_bos_token`` says so (SmolLM2's says no, so its
    named-template runs need it written). The BOS a named template puts after each answer's EOS
    (XTuner's templates without an end-of-turn suffix) is written after the answer.
    """
    from tuitune.templates import TEMPLATES, bos_ids, get_template, render_prompt

    name = template
    bos = (tokenizer.bos_token or "") if bos_ids(tokenizer) else ""
    if template == "auto":
        probe = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
                 {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
        own = render_prompt(tokenizer, "auto", probe)

        def rendered(n):  # without a leading BOS: the tokenizer's own template may leave it out
            text = render_prompt(tokenizer, n, probe)
            return text[len(bos):] if bos and text.startswith(bos) and not own.startswith(bos + bos) else text

        name = next((n for n in TEMPLATES if rendered(n) == own or rendered(n) == own.removeprefix(bos)), None)
        if name is None:
            raise TuituneError("the tokenizer's own chat template (jinja) renders as none of the named templates, "
                               "so it has no Go-template form here; export --format gguf (the GGUF carries the "
                               "jinja template), or train with a named template")
        lead = bool(bos) and render_prompt(tokenizer, name, probe) == own   # its own template writes the BOS
    else:
        lead = bool(bos)
    tpl = get_template(name)
    for part, text in (("system wrapper", tpl.system), ("instruction", tpl.instruction)):
        if "{round}" in text:
            raise TuituneError(f"template {name}: its {part} numbers the turns ({{round}}), which Ollama's "
                               "template has no value for; export --format gguf instead")
    sys_pre, _, sys_post = tpl.system.partition("{system}")
    ins_pre, _, ins_post = tpl.instruction.partition("{input}")
    eos = "" if tpl.suffix_as_eos else (tokenizer.eos_token or "")
    again = "" if tpl.suffix_as_eos else bos   # the next turn's BOS, after this answer's EOS
    body = (_go_text(bos if lead and not bos_added else "", "BOS")
            + "{{- if .System }}" + _go_text(sys_pre, "system wrapper") + "{{ .System }}" + _go_text(sys_post, "system "
            "wrapper") + "{{ end }}{{- range $i, $_ := .Messages }}{{- if eq .Role \"user\" }}"
            + _go_text(ins_pre, "instruction") + "{{ .Content }}" + _go_text(ins_post, "instruction")
            + "{{ else if eq .Role \"assistant\" }}{{ .Content }}"
            + _go_text(tpl.suffix + eos + tpl.sep + again, "suffix")
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
                     log: Callable[[str], None] = lambda s: None, bos_added: bool = False) -> str:
    """The Modelfile for ``gguf_name``: the Go template, the stop words, and the system prompt training
    used: ``system`` (the run's ``data.system``), else for ``auto`` the template's own default.
    ``bos_added``: the GGUF has the runtime add the BOS (:func:`ollama_template`)."""
    from tuitune.templates import stop_words

    go, named = ollama_template(tokenizer, template, bos_added)
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


def write(job) -> Written:
    from transformers import AutoTokenizer

    from tuitune.export.llamacpp import adds_bos
    from tuitune.fsutil import slug

    gguf_name = f"{job.model_name}-{job.outtype}.gguf"
    tokenizer = AutoTokenizer.from_pretrained(job.model_dir)
    # A template Ollama cannot take fails before the conversion.
    ollama_modelfile(tokenizer, job.template, job.system, gguf_name)
    folder = job.tmp / "ollama"
    folder.mkdir()
    gguf = job.gguf(folder / gguf_name)
    # Whether the BOS goes in the TEMPLATE: the runtime adds one only where the GGUF says so.
    mf = ollama_modelfile(tokenizer, job.template, job.system, gguf_name, job.log, bos_added=adds_bos(gguf))
    (folder / "Modelfile").write_text(mf, encoding="utf-8")
    return Written(path=folder, gguf=gguf,
                   command=f"ollama create {slug(job.model_name.lower(), 'model')} -f {job.out / 'Modelfile'}")


FORMAT = ExportFormat(name="ollama", label="Ollama", kind="folder", output="{stem}-ollama",
                      description="a folder with the GGUF and a Modelfile (its TEMPLATE, stops and SYSTEM are "
                      "what training used)", write=write)

__all__ = ["ollama_template", "default_system_prompt", "modelfile", "ollama_modelfile", "FORMAT"]
