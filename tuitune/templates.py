"""Prompt templates: XTuner-compatible named templates, and ``auto`` (the tokenizer's own).

A named template is XTuner's (``xtuner/utils/templates.py``): ``SYSTEM`` wraps the
system prompt on the first turn, ``INSTRUCTION`` wraps each user input and ends with the
assistant header, ``SUFFIX`` closes each answer (and is the end-of-turn token when
``SUFFIX_AS_EOS``; otherwise the tokenizer's EOS follows the answer), ``SEP`` separates
turns. Training and generation both go through :func:`segments`, so a prompt is
rendered exactly as the training data was.

``auto`` uses ``tokenizer.chat_template`` (jinja, through transformers).

Text from :func:`render_prompt` already holds the BOS token where the model wants one:
tokenize it with ``add_special_tokens=False`` (or use :func:`encode_prompt`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuitune.errors import TuituneError


@dataclass(frozen=True)
class Template:
    name: str
    system: str = "{system}"
    instruction: str = "{input}"
    suffix: str = ""
    suffix_as_eos: bool = False
    sep: str = ""
    stop_words: tuple[str, ...] = ()
    description: str = ""


_LLAMA2_SYS = ("[INST] <<SYS>>\n You are a helpful, respectful and honest assistant. Always answer as helpfully "
               "as possible, while being safe. Your answers should not include any harmful, unethical, racist, "
               "sexist, toxic, dangerous, or illegal content. Please ensure that your responses are socially "
               "unbiased and positive in nature.\n{system}\n<</SYS>>\n [/INST] ")

TEMPLATES: dict[str, Template] = {t.name: t for t in (
    Template("default", "<|System|>:{system}\n", "<|User|>:{input}\n<|Bot|>:", sep="\n",
             description="XTuner's generic template; EOS closes each answer"),
    Template("internlm2_chat", "<|im_start|>system\n{system}<|im_end|>\n",
             "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>", True, "\n",
             ("<|im_end|>",), "InternLM2 / InternLM2.5 chat"),
    Template("qwen_chat", "<|im_start|>system\n{system}<|im_end|>\n",
             "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>", True, "\n",
             ("<|im_end|>", "<|endoftext|>"), "Qwen / Qwen1.5 / Qwen2 / Qwen2.5 chat"),
    Template("chatml", "<|im_start|>system\n{system}<|im_end|>\n",
             "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>", True, "\n",
             ("<|im_end|>",), "ChatML (the tiny demo model uses it)"),
    Template("llama2_chat", _LLAMA2_SYS, "[INST] {input} [/INST]", sep="\n",
             description="Llama 2 chat"),
    Template("llama3_chat", "<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
             "<|start_header_id|>user<|end_header_id|>\n\n{input}<|eot_id|>"
             "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", True, "",
             ("<|eot_id|>",), "Llama 3 / 3.1 instruct"),
    Template("mistral", "[INST] {system}\n", "[INST] {input} [/INST]", sep="</s>", stop_words=("</s>",),
             description="Mistral instruct"),
)}

#: Every template name a config or a screen may offer; ``auto`` is the tokenizer's own.
TEMPLATE_NAMES: tuple[str, ...] = (*TEMPLATES, "auto")


def get_template(name: str) -> Template:
    if name == "auto":
        return Template("auto", description="the tokenizer's own chat template")
    try:
        return TEMPLATES[name]
    except KeyError:
        raise TuituneError(f"unknown template {name!r}; templates: {', '.join(TEMPLATE_NAMES)}") from None


# --- segments: text pieces with a trained flag ---------------------------------------------------

@dataclass
class Segment:
    text: str
    trained: bool
    ids: list[int] | None = field(default=None)  # set for BOS/EOS added as ids, not text


def bos_ids(tokenizer) -> list[int]:
    """The ids a sequence starts with: none or the tokenizer's BOS (the encoder's pretraining text too)."""
    # XTuner: Qwen tokenizers take no BOS; others their bos_token_id if they have one.
    if type(tokenizer).__name__.lower().startswith("qwen") or tokenizer.bos_token_id is None:
        return []
    return [tokenizer.bos_token_id]


def eos_ids(tokenizer, template: str) -> list[int]:
    """The tokenizer's EOS as ids; a tokenizer without one is a one-line error naming ``template``."""
    if tokenizer.eos_token_id is None:
        raise TuituneError(f"the tokenizer has no eos_token and template {template!r} needs one; "
                           "set eos_token in tokenizer_config.json or pick a template with an end-of-turn suffix")
    return [tokenizer.eos_token_id]


def to_turns(messages: list[dict]) -> list[dict]:
    """[{role, content}] → XTuner turns; a trailing user message becomes a turn without output."""
    turns: list[dict] = []
    system = ""
    pending: list[str] = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if not isinstance(content, str):
            raise TuituneError(f"message {i + 1}: content must be text")
        if role == "system":
            system = content if not system else system + "\n" + content
        elif role == "user":
            pending.append(content)
        elif role == "assistant":
            turns.append({"input": "\n".join(pending), "output": content})
            pending = []
        else:
            raise TuituneError(f"message {i + 1}: unknown role {role!r}; use system, user or assistant")
    if pending:
        turns.append({"input": "\n".join(pending), "output": None})
    if system:
        if not turns:
            turns.append({"input": "", "output": None})
        turns[0] = {"system": system, **turns[0]}
    return turns


def to_messages(turns: list[dict]) -> list[dict]:
    msgs = []
    for i, t in enumerate(turns):
        if i == 0 and t.get("system"):
            msgs.append({"role": "system", "content": t["system"]})
        msgs.append({"role": "user", "content": t.get("input") or ""})
        if t.get("output") is not None:
            msgs.append({"role": "assistant", "content": t["output"]})
    return msgs


def _named_segments(tokenizer, tpl: Template, turns: list[dict]) -> list[Segment]:
    segs: list[Segment] = []
    needs_bos = True
    for i, t in enumerate(turns):
        if needs_bos:
            bos = bos_ids(tokenizer)
            if bos:
                segs.append(Segment(tokenizer.bos_token, False, bos))
        prompt = tpl.instruction.format(input=t.get("input") or "", round=i + 1)
        if i == 0 and t.get("system"):
            prompt = tpl.system.format(system=t["system"]) + prompt
        segs.append(Segment(prompt, False))
        if t.get("output") is None:
            break
        segs.append(Segment(t["output"] + tpl.suffix, True))
        if not tpl.suffix_as_eos:
            segs.append(Segment(tokenizer.eos_token or "", True, eos_ids(tokenizer, tpl.name)))
            needs_bos = True
        else:
            needs_bos = False
        if tpl.sep:
            segs.append(Segment(tpl.sep, False))
    return segs


def _apply(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # jinja raises TemplateError (e.g. "system role not supported") and others
        raise TuituneError(f"the tokenizer's chat template can't render this conversation "
                           f"({type(exc).__name__}: {exc}); pick a named template: "
                           f"{', '.join(TEMPLATES)}") from None


def _special_strings(tokenizer) -> list[str]:
    toks = set(tokenizer.all_special_tokens)
    try:
        toks.update(t.content for t in tokenizer.added_tokens_decoder.values() if getattr(t, "special", False))
    except Exception:  # noqa: BLE001 - older tokenizers
        pass
    return sorted((t for t in toks if t), key=len, reverse=True)


def _auto_segments(tokenizer, turns: list[dict]) -> list[Segment]:
    """Assistant spans of the tokenizer's own template, found by rendering growing prefixes.

    The text between "prefix up to the user message + generation prompt" and "prefix up
    to the assistant message" is what the model must produce: that span is trained up to
    and including the first special token after the answer (the end-of-turn), and
    whatever formatting follows it (a newline) is masked.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise TuituneError(f"template 'auto': the tokenizer has no chat_template; pick a named template: "
                           f"{', '.join(TEMPLATES)}")
    msgs = to_messages(turns)
    has_open = turns and turns[-1].get("output") is None
    full = _apply(tokenizer, msgs, add_generation_prompt=bool(has_open))
    specials = _special_strings(tokenizer)
    segs: list[Segment] = []
    cursor = 0
    for k, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        p = _apply(tokenizer, msgs[:k], add_generation_prompt=True)
        f = _apply(tokenizer, msgs[: k + 1], add_generation_prompt=False)
        if not (f.startswith(p) and full.startswith(f) and len(p) >= cursor):
            raise TuituneError("template 'auto': the tokenizer's chat template renders earlier turns "
                               "differently as the conversation grows, so the answers can't be located; "
                               f"pick a named template: {', '.join(TEMPLATES)}")
        span = f[len(p):]
        content = m["content"]
        pos = span.find(content) if content else 0
        if pos < 0:
            pos = span.find(content.strip())
            content = content.strip()
        end = len(span)
        if pos >= 0:
            after = pos + len(content)
            rest = span[after:]
            stripped = rest.lstrip(" ")
            hit = next((s for s in specials if stripped.startswith(s)), None)
            if hit is None and tokenizer.eos_token and tokenizer.eos_token in rest:
                end = after + rest.index(tokenizer.eos_token) + len(tokenizer.eos_token)
            elif hit is not None:
                end = after + (len(rest) - len(stripped)) + len(hit)
            else:
                end = after + len(rest.rstrip())
        if len(p) > cursor:
            segs.append(Segment(full[cursor:len(p)], False))
        segs.append(Segment(full[len(p):len(p) + end], True))
        cursor = len(p) + end
    if cursor < len(full):
        segs.append(Segment(full[cursor:], False))
    return segs


def segments(tokenizer, template: str, turns: list[dict]) -> list[Segment]:
    """The conversation as text pieces, each flagged trained (assistant output + end-of-turn) or not."""
    tpl = get_template(template)
    if not turns:
        raise TuituneError("empty conversation")
    if template == "auto":
        return _auto_segments(tokenizer, turns)
    return _named_segments(tokenizer, tpl, turns)


def render_prompt(tokenizer, template: str, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The text fed to the model for generation; tokenize with ``add_special_tokens=False``.

    Named templates always end a trailing user message with the assistant header (it
    is part of XTuner's INSTRUCTION), whatever ``add_generation_prompt`` says.
    """
    turns = to_turns(messages)
    if not turns:
        raise TuituneError("no messages to render")
    if template == "auto":
        if not getattr(tokenizer, "chat_template", None):
            raise TuituneError(f"template 'auto': the tokenizer has no chat_template; pick a named template: "
                               f"{', '.join(TEMPLATES)}")
        return _apply(tokenizer, messages, add_generation_prompt)
    return "".join(s.text for s in segments(tokenizer, template, turns))


def encode_prompt(tokenizer, template: str, messages: list[dict]) -> list[int]:
    ids: list[int] = []
    for s in segments(tokenizer, template, to_turns(messages)) if template != "auto" else []:
        ids += s.ids if s.ids is not None else tokenizer.encode(s.text, add_special_tokens=False)
    if template == "auto":
        ids = tokenizer.encode(render_prompt(tokenizer, template, messages), add_special_tokens=False)
    return ids


def stop_words(tokenizer, template: str) -> list[str]:
    """Strings that end an answer: the template's stop words, the end-of-turn, and EOS."""
    tpl = get_template(template)
    words = list(tpl.stop_words)
    if template == "auto" and getattr(tokenizer, "chat_template", None):
        try:
            segs = _auto_segments(tokenizer, [{"input": "hi", "output": "ok"}])
            trained = next(s.text for s in segs if s.trained)
            words += [s for s in _special_strings(tokenizer) if trained.endswith(s)][:1]
        except TuituneError:
            pass
    if tokenizer is not None and tokenizer.eos_token:
        words.append(tokenizer.eos_token)
    return list(dict.fromkeys(w for w in words if w))


# --- the template as jinja: what a served model renders --------------------------------------------

def _lit(text: str) -> str:
    """A jinja string literal (jinja reads Python's escapes, so JSON's double-quoted form is one)."""
    import json

    return "{{ " + json.dumps(text) + " }}"


def _fill(pattern: str, field: str, expr: str) -> str:
    """``pattern`` (``"<|User|>:{input}\\n"``) as jinja, ``{field}`` becoming ``expr``, ``{round}`` the turn."""
    out = []
    for k, part in enumerate(pattern.split("{" + field + "}")):
        if k:
            out.append("{{ " + expr + " }}")
        for j, piece in enumerate(part.split("{round}")):
            if j:
                out.append("{{ loop_round }}")
            if piece:
                out.append(_lit(piece))
    return "".join(out)


def to_jinja(tokenizer, template: str, default_system: str | None = None) -> str | None:
    """The named ``template`` as a jinja chat template, rendering what training encodes.

    ``apply_chat_template`` on it gives, token for token, the sequence training saw for
    the same conversation (:func:`segments`: BOS where the tokenizer takes one, the system
    wrapper on the first turn, each input in the instruction, each answer with the suffix
    and EOS where the template has no end-of-turn, the separator), and for a conversation
    that ends with a user message the prompt chat sends (the instruction carries the
    assistant header, so ``add_generation_prompt`` changes nothing). Without a system
    message, ``default_system`` (the run's ``data.system``) is used, as training put it
    before every record. Consecutive user messages are joined with a newline, as
    :func:`to_turns` does. ``auto``: None (the tokenizer's own template stays).
    """
    if template == "auto":
        return None
    tpl = get_template(template)
    bos = _lit(tokenizer.bos_token) if bos_ids(tokenizer) else ""
    eos = "" if tpl.suffix_as_eos else "{{ eos_token }}"
    if not tpl.suffix_as_eos and tokenizer.eos_token_id is None:
        eos_ids(tokenizer, template)  # the one-line error
    default = default_system or ""
    parts = [
        "{%- set ns = namespace(system=" + json_str(default) + ", pending=none, round=0, bos=true) -%}",
        "{%- for m in messages -%}",
        "{%- if m['role'] == 'system' -%}{%- set ns.system = m['content'] -%}",
        "{%- elif m['role'] == 'user' -%}",
        "{%- set ns.pending = m['content'] if ns.pending is none else ns.pending + '\\n' + m['content'] -%}",
        "{%- elif m['role'] == 'assistant' -%}",
        _turn(tpl, bos, open_turn=False) + "{{ m['content'] }}" + (_lit(tpl.suffix) if tpl.suffix else "") + eos
        + ("{%- set ns.bos = true -%}" if not tpl.suffix_as_eos else "")
        + (_lit(tpl.sep) if tpl.sep else ""),
        "{%- endif -%}",
        "{%- endfor -%}",
        "{%- if ns.pending is not none -%}" + _turn(tpl, bos, open_turn=True) + "{%- endif -%}",
    ]
    return "".join(parts)


def json_str(text: str) -> str:
    import json

    return json.dumps(text)


def _turn(tpl: Template, bos: str, open_turn: bool) -> str:
    """BOS if due, the system wrapper on the first turn, the instruction; then the turn is counted."""
    head = ("{%- if ns.bos -%}" + bos + "{%- set ns.bos = false -%}{%- endif -%}") if bos else ""
    system = "{%- if ns.round == 0 and ns.system -%}" + _fill(tpl.system, "system", "ns.system") + "{%- endif -%}"
    instruction = _fill(tpl.instruction, "input", "ns.pending if ns.pending is not none else ''")
    instruction = instruction.replace("{{ loop_round }}", "{{ ns.round + 1 }}")
    tail = "{%- set ns.round = ns.round + 1 -%}{%- set ns.pending = none -%}"
    return head + system + instruction + tail
