"""``--check-runtime``: the exported GGUF run by llama.cpp, its answers against ``tuitune chat``'s.

The export's other checks read the file's metadata; this one runs it, as a user's runtime would
(the most reported export failure is a template or stop token that changed on the way).
llama-cpp-python loads the GGUF; each prompt is rendered with the GGUF's own chat template
(``tokenizer.chat_template``, through llama-cpp-python's ``Jinja2ChatFormatter`` and tokenized as
its chat handler does), and answered greedily until llama.cpp's end-of-generation token. The same
prompts go through tuitune's one generation path (:func:`tuitune.generation.answer_batch`, one
prompt at a time) on the source loaded as ``tuitune chat SOURCE --temperature 0 --dtype fp32``
loads it: the run's template and system prompt, its adapter unmerged.

What it proves, per prompt: the prompt llama.cpp renders is, token for token, the prompt tuitune
encodes (else a one-line error, nothing published); llama.cpp stops at the template's end-of-turn
(a run-on past it is an error); and whether the greedy answer is the same. Where it is not, the
first token that differs and both runtimes' logits for the two candidates there (a near tie
flips under f16 or q8_0 rounding), and for every answer the share of tuitune's tokens llama.cpp
also picks given the same prefix (teacher-forced, so one early flip does not count the rest).

llama-cpp-python is optional (``pip install 'tuitune[runtime]'``): :func:`require_runtime` says
so in one line before an export writes anything.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tuitune.errors import FIELD, TuituneError, first_line

INSTALL = "pip install 'tuitune[runtime]'"
#: Questions any instruct model answers; the run's own evaluation prompts come first.
GENERAL_PROMPTS = ("Who are you?", "What is the capital of France?", "Name three primary colors.",
                   "How many days are there in a week?", "Give one tip for a good night's sleep.")
PROMPTS = 5
MAX_NEW_TOKENS = 64


def require_runtime() -> None:
    """TuituneError (field ``check_runtime``) unless llama-cpp-python imports and its library loads."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise TuituneError(f"{FIELD} needs llama-cpp-python, which is not installed here: {INSTALL} (it builds "
                           "llama.cpp from source, a few minutes)", field="check_runtime",
                           fix=f", or export without {FIELD}", tui_fix=", or export with it off") from None
    except (OSError, RuntimeError) as exc:
        raise TuituneError(f"{FIELD}: llama-cpp-python is installed but its llama.cpp library does not load "
                           f"({first_line(exc)}); reinstall it: pip install --force-reinstall --no-cache-dir "
                           "llama-cpp-python", field="check_runtime") from None


@dataclass
class RuntimeAnswer:
    prompt: str
    runtime: str                   # llama.cpp's answer
    tuitune: str                   # tuitune chat's
    runtime_ids: list[int]         # the answer's tokens, the end-of-turn included where it stopped
    tuitune_ids: list[int]
    prompt_tokens: int
    agree: int = 0                 # tuitune's tokens llama.cpp also picks after the same prefix
    differs_at: int | None = None  # the first answer token that differs; None: the same answer
    logits: dict = field(default_factory=dict)   # at differs_at: {"tuitune": [a, b], "llama.cpp": [a, b]}
    tokens: list[str] = field(default_factory=list)   # at differs_at: [tuitune's token, llama.cpp's]

    @property
    def same(self) -> bool:
        return self.differs_at is None

    def difference(self) -> str:
        """One line: where the answers part and how close the two candidates were."""
        if self.same:
            return ""
        t, r = self.tokens
        lt, lr = self.logits.get("tuitune", [None, None]), self.logits.get("llama.cpp", [None, None])
        near = " (a near tie)" if None not in lt and abs(lt[0] - lt[1]) < 0.5 else ""
        return (f"{self.prompt!r} differs from answer token {self.differs_at + 1}: tuitune {t!r}, llama.cpp {r!r}; "
                f"logits of the two: tuitune {_pair(lt)}, llama.cpp {_pair(lr)}{near}")


def _pair(values) -> str:
    return " / ".join("-" if v is None else f"{v:.2f}" for v in values)


@dataclass
class RuntimeCheck:
    gguf: str
    answers: list[RuntimeAnswer]
    dtype: str
    notes: list[str] = field(default_factory=list)   # what the user should know beside the answers
    seconds: float = 0.0

    @property
    def same(self) -> int:
        return sum(a.same for a in self.answers)

    @property
    def agreement(self) -> float:
        """The share of tuitune's answer tokens llama.cpp picks too, given the same prefix."""
        total = sum(len(a.tuitune_ids) for a in self.answers)
        return sum(a.agree for a in self.answers) / total if total else 1.0

    def line(self) -> str:
        n = len(self.answers)
        if self.same == n:
            return f"runs in llama.cpp: same answers as tuitune chat on {n} prompts"
        return (f"runs in llama.cpp: same answers as tuitune chat on {self.same} of {n} prompts; "
                f"{self.agreement:.0%} of answer tokens agree")

    def details(self) -> list[str]:
        """The notes, then where each answer that differs parts."""
        return [*self.notes, *(a.difference() for a in self.answers if not a.same)]

    def to_dict(self) -> dict:
        return {**asdict(self), "same": self.same, "agreement": round(self.agreement, 4), "line": self.line(),
                "details": self.details()}


def choose_prompts(own: list[str] | None, n: int = PROMPTS) -> list[str]:
    """The run's evaluation prompts, then general ones, ``n`` in all."""
    return list(dict.fromkeys([p for p in (own or []) if p.strip()] + list(GENERAL_PROMPTS)))[:n]


# --- llama.cpp's side -------------------------------------------------------------------------------

def load_gguf(path: str | Path, n_ctx: int = 1024, n_threads: int | None = None):
    """The GGUF in llama.cpp (every position's logits kept, for the teacher-forced agreement)."""
    require_runtime()
    import atexit

    from llama_cpp import Llama, _utils

    # llama_cpp._utils opens os.devnull twice at import and never closes it: "ResourceWarning:
    # unclosed file" twice at exit, after the export's output, unless closed once we are done.
    atexit.register(lambda: [f.close() for f in (getattr(_utils, "outnull_file", None),
                                                 getattr(_utils, "errnull_file", None)) if f is not None])
    try:
        return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, logits_all=True, verbose=False)
    except (ValueError, RuntimeError, OSError) as exc:
        raise TuituneError(f"{path}: llama.cpp cannot load the file ({first_line(exc)})") from None


def _token_text(llm, token: int) -> str:
    import llama_cpp

    return llama_cpp.llama_vocab_get_text(llama_cpp.llama_model_get_vocab(llm.model), token).decode("utf-8", "replace")


def runtime_prompt(llm, messages: list[dict]) -> list[int]:
    """The prompt's tokens as llama-cpp-python's chat completion makes them from the GGUF's template.

    Its handler for ``tokenizer.chat_template`` (``Llama.__init__``: a ``Jinja2ChatFormatter``
    given the vocabulary's EOS and BOS texts; ``chat_formatter_to_chat_completion_handler``:
    the rendered text tokenized with special tokens, a BOS only where the formatter added none)
    is a closure that returns the answer, not the prompt, so its two steps are taken here.
    """
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise TuituneError(f"{llm.model_path}: the GGUF has no tokenizer.chat_template, so llama.cpp would render "
                           "prompts in a format of its own; export a model whose tokenizer has its chat template")
    eos, bos = llm.token_eos(), llm.token_bos()
    formatter = Jinja2ChatFormatter(template=template, eos_token=_token_text(llm, eos) if eos != -1 else "",
                                    bos_token=_token_text(llm, bos) if bos != -1 else "")
    result = formatter(messages=messages)
    return llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)


def runtime_answer(llm, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """llama.cpp's greedy answer from a fresh context, its end-of-generation token included where it
    stopped. Afterwards ``llm.scores[len(prompt_ids) - 1 + i]`` holds the logits token ``i`` was picked from."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    ids: list[int] = []
    llm.reset()   # no prefix reused from the last prompt: each answer as a fresh runtime gives it
    for token in llm.generate(prompt_ids, temp=0.0, repeat_penalty=1.0, reset=True):
        ids.append(int(token))
        if llama_cpp.llama_vocab_is_eog(vocab, token) or len(ids) >= max_new_tokens:
            break
    return ids


def agreement(llm, prompt_ids: list[int], answer_ids: list[int]) -> int:
    """How many of ``answer_ids`` llama.cpp picks itself (greedy) after the prompt and the answer's
    tokens before each: one pass over the whole answer, so a flip early on does not count the rest."""
    if not answer_ids:
        return 0
    llm.reset()
    llm.eval(list(prompt_ids) + list(answer_ids[:-1]))
    rows = llm.scores[len(prompt_ids) - 1:len(prompt_ids) - 1 + len(answer_ids)]
    return int(sum(int(row.argmax()) == t for row, t in zip(rows, answer_ids)))


# --- the check --------------------------------------------------------------------------------------

def _first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def check_runtime(gguf: str | Path, source: str, *, workspace: str | Path = ".", prompts: list[str] | None = None,
                  max_new_tokens: int = MAX_NEW_TOKENS, dtype: str = "fp32",
                  log: Callable[[str], None] = lambda s: None) -> RuntimeCheck:
    """Run ``gguf`` in llama.cpp on ``prompts`` (default: :func:`choose_prompts` of the source's run)
    and compare with tuitune chat on ``source`` (a run, adapter or model, as every verb takes it)."""
    require_runtime()
    import torch

    from tuitune.chat import ChatSession
    from tuitune.generation import GenerationSettings, answer_batch, encode
    from tuitune.loading import adapter_selector

    t0 = time.time()
    settings = GenerationSettings(temperature=0.0, max_new_tokens=max_new_tokens)
    session = ChatSession(settings).load(source, workspace=workspace, dtype=dtype)
    asked = prompts or choose_prompts(session.source.prompts if session.source else None)
    log(f"checking in llama.cpp: {len(asked)} prompts, greedy, against tuitune chat ({dtype})")
    tok, model, loaded = session.tokenizer, session.loaded.model, session.loaded
    prepare = adapter_selector(model, loaded.is_peft, session.adapter_name)
    tuned = [session.messages(p) for p in asked]
    mine = answer_batch(model, tok, settings, template=session.template, conversations=tuned, batch_size=1,
                        prepare=prepare)
    encoded = [encode(tok, session.template, m) for m in tuned]
    longest = max(len(e) + len(a.ids) for e, a in zip(encoded, mine))
    llm = load_gguf(gguf, n_ctx=max(512, longest + max_new_tokens + 8), n_threads=torch.get_num_threads())
    stop_ids = set(_stop_ids(model, tok, session.template))
    notes: list[str] = []
    answers = []
    for p, want_prompt, a in zip(asked, encoded, mine):
        # The user's message alone, as a client sends it: the GGUF's template puts in the system prompt
        # the run trained with. A run with template auto keeps the tokenizer's own template, which knows
        # nothing of data.system: then it is sent, and the result says a client must send it too.
        got_prompt = runtime_prompt(llm, [{"role": "user", "content": p}])
        if got_prompt != want_prompt and session.system:
            sent = runtime_prompt(llm, session.messages(p))
            if sent == want_prompt:
                got_prompt = sent
                notes[:] = ["the GGUF's chat template does not put in the run's system prompt (data.system), so "
                            "it was sent with each prompt: a client must send it too (an Ollama folder's "
                            "Modelfile SYSTEM does; a run with a named template has it in the template)"]
        at = _first_difference(got_prompt, want_prompt)
        if at is not None:
            raise TuituneError(f"{gguf}: llama.cpp renders {p!r} otherwise than training did, from prompt token "
                               f"{at + 1} ({_at(tok, got_prompt, at)} there, {_at(tok, want_prompt, at)} in "
                               "training): the GGUF's chat template is not the one the run trained with")
        got = runtime_answer(llm, got_prompt, max_new_tokens)
        run_on = [t for t in got[:-1] if t in stop_ids]
        if run_on:
            raise TuituneError(f"{gguf}: llama.cpp runs on past the end-of-turn {tok.convert_ids_to_tokens(run_on[0])!r} "
                               f"in its answer to {p!r}: the GGUF's end-of-generation tokens leave it out")
        n = len(want_prompt)
        ans = RuntimeAnswer(prompt=p, runtime=tok.decode(got, skip_special_tokens=True).strip(), tuitune=a.text.strip(),
                            runtime_ids=got, tuitune_ids=list(a.ids), prompt_tokens=n,
                            differs_at=_first_difference(got, a.ids))
        d = ans.differs_at
        if d is not None and d < min(len(got), len(a.ids)):
            pair = [a.ids[d], got[d]]
            theirs = llm.scores[n - 1 + d]   # what the generation picked from (before agreement() re-evaluates)
            with prepare(), torch.no_grad():
                ours = model(input_ids=torch.tensor([want_prompt + a.ids[:d]], device=model.device)).logits[0, -1]
            ans.logits = {"tuitune": [float(ours[t]) for t in pair], "llama.cpp": [float(theirs[t]) for t in pair]}
            ans.tokens = [tok.decode([t]) for t in pair]
        elif d is not None:   # one answer is the other's beginning: one stopped, one went on
            ans.tokens = [tok.decode(a.ids[d:d + 1]) or "(its end)", tok.decode(got[d:d + 1]) or "(its end)"]
        ans.agree = agreement(llm, want_prompt, a.ids)
        answers.append(ans)
    del llm
    session.unload()
    return RuntimeCheck(gguf=str(gguf), answers=answers, dtype=dtype, notes=notes, seconds=round(time.time() - t0, 1))


def _stop_ids(model, tokenizer, template: str) -> list[int]:
    from tuitune.generation import stop_tokens
    from tuitune.templates import stop_words

    return stop_tokens(model, tokenizer, stop_words(tokenizer, template))[0]


def _at(tokenizer, ids: list[int], i: int) -> str:
    return repr(tokenizer.convert_ids_to_tokens(ids[i])) if i < len(ids) else "the prompt's end"


__all__ = ["check_runtime", "require_runtime", "RuntimeCheck", "RuntimeAnswer", "choose_prompts", "load_gguf",
           "runtime_prompt", "runtime_answer", "agreement", "INSTALL", "GENERAL_PROMPTS"]
