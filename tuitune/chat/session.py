"""A chat session: one loaded model, its history, its template; compare mode's pair of sessions."""

from __future__ import annotations

import gc
import json
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tuitune.errors import TuituneError, first_line
from tuitune.generation import Generation, GenerationSettings, Stats, Turns, encode, messages_for
from tuitune.loading import (LoadedModel, adapter_selector, can_share_base, check_template, context_length, load_model,
                             load_tokenizer)
from tuitune.sources import ModelSource, resolve


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
        self._generation: Generation | None = None
        self.generating = False

    # --- loading ----------------------------------------------------------------------------
    def load(self, source: ModelSource | str, *, workspace: str | Path = ".", adapter=None, checkpoint=None,
             template: str | None = None, dtype: str = "auto", bits: int | None = None,
             progress: Callable[[str], None] | None = None) -> "ChatSession":
        """Load a model (freeing the one loaded before); ``source`` is a spec or a :class:`ModelSource`."""
        if not isinstance(source, ModelSource):
            source = resolve(source, workspace, adapter=adapter, checkpoint=checkpoint)
        self.unload()
        adapters = {"tuned": source.adapter} if source.adapter else {}
        loaded = load_model(source.base, adapters, dtype=dtype, bits=bits,
                            trust_remote_code=source.trust_remote_code, progress=progress)
        return self.attach(loaded, "tuned" if source.adapter else None, source, template)

    def attach(self, loaded: LoadedModel, adapter_name: str | None, source: ModelSource,
               template: str | None = None) -> "ChatSession":
        """Use an already loaded model (one of its adapters, or None for the bare base)."""
        tokenizer = load_tokenizer(source.tokenizer_dir, source.trust_remote_code)
        name = template or source.template or "auto"
        self.template = check_template(tokenizer, name, source.label or source.base)
        self.tokenizer = tokenizer
        self.loaded, self.adapter_name, self.source = loaded, adapter_name, source
        self.context_length = context_length(loaded.model, tokenizer)
        self.reset()
        return self

    def set_template(self, template: str | None) -> str:
        """Use another prompt template from the next answer on (None: the run's, else ``auto``)."""
        name = template or (self.source.template if self.source else None) or "auto"
        self.template = check_template(self.tokenizer, name, self.source.label if self.source else "model")
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
        gen = self._generation
        if gen is not None:
            gen.stop()

    @property
    def system(self) -> str:
        """The system prompt in use: the settings', else the one the loaded run was trained with."""
        return self.settings.system or (self.source.system if self.source else "")

    def messages(self, prompt: str | None = None, history: list[dict] | None = None) -> list[dict]:
        return messages_for(prompt, self.system, self.history if history is None else history)

    def _encode(self, prompt: str, max_new: int) -> tuple[list[int], int, int, str]:
        """Prompt ids, oldest turns dropped, max_new_tokens (maybe lowered) and a note."""
        history = list(self.history)
        dropped = 0
        while True:
            ids = encode(self.tokenizer, self.template, self.messages(prompt, history))
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

    def stream(self, prompt: str, *, turns: Turns | None = None, side: int = 0,
               stop_event: threading.Event | None = None) -> Iterator[str]:
        """Answer ``prompt``: yields text pieces as tokens arrive; then ``self.last`` holds the Answer.

        The answer joins the history. Closing the iterator early stops the generation.
        ``turns``, ``side``, ``stop_event``: this is one side of :class:`Together`.
        """
        if not self.is_loaded:
            raise TuituneError("no model loaded; load one first")
        if not isinstance(prompt, str) or not prompt.strip():
            raise TuituneError("empty prompt; type a question")
        t0 = time.perf_counter()
        s = self.settings
        ids, dropped, max_new, note = self._encode(prompt, s.max_new_tokens)
        model = self.loaded.model
        gen = Generation(model, self.tokenizer, s, template=self.template, ids=ids, max_new_tokens=max_new,
                         prepare=adapter_selector(model, self.loaded.is_peft, self.adapter_name), t0=t0,
                         turns=turns, side=side, stop_event=stop_event)
        self._generation = gen
        self.generating = True
        try:
            yield from gen
        finally:
            self.generating = False
            self._generation = None
            stats = gen.stats
            if stats is not None:
                stats.trimmed_turns, stats.note = dropped, note
                self.last = Answer(prompt, gen.text, stats)
                if stats.finish != "error":
                    self.history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": gen.text}]

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
    if Path(a.base) == Path(b.base) and a.trust_remote_code == b.trust_remote_code and \
            can_share_base([a.adapter, b.adapter if b.adapter != a.adapter else None]):
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


@dataclass
class Event:
    """What :class:`Together` reports: a piece of side ``side``'s answer, or that side's end.

    At the end (``done``): ``answer`` (its text and stats; ``stats.finish`` is ``stopped``
    when it was stopped), or ``error``, one line, when it failed.
    """

    side: int
    text: str = ""
    done: bool = False
    answer: Answer | None = None
    error: str = ""


class Together:
    """One prompt answered by several sessions together (compare mode), streamed as :class:`Event` s.

    The sides take turns token by token on the model (:mod:`tuitune.generation.turns`
    says why turns and not two generations at once), so both answers grow together and
    each is the answer its session would give alone with the same settings and seed. A
    thread per side reads its stream into one queue; iterating yields the events in the
    order they came. :meth:`stop` (from any thread) ends every side still answering after
    its current token; the text so far stays, as an answer whose finish is ``stopped``.
    A side that fails ends with its error; the others go on.
    """

    def __init__(self, sessions: list[ChatSession], prompt: str):
        self.sessions, self.prompt = list(sessions), prompt
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _side(self, side: int, session: ChatSession, turns: Turns, out: queue.SimpleQueue) -> None:
        try:
            for piece in session.stream(self.prompt, turns=turns, side=side, stop_event=self._stop):
                out.put(Event(side, text=piece))
            out.put(Event(side, done=True, answer=session.last))
        except Exception as exc:  # noqa: BLE001 - this side's error; the others go on
            out.put(Event(side, done=True, error=exc.note if isinstance(exc, TuituneError) else
                          f"{type(exc).__name__}: {first_line(exc)}"))
        finally:
            turns.leave(side)  # a side that failed before its first token must not hold the others up

    def __iter__(self) -> Iterator[Event]:
        turns = Turns(len(self.sessions))
        out: queue.SimpleQueue = queue.SimpleQueue()
        threads = [threading.Thread(target=self._side, args=(i, s, turns, out), name=f"tuitune-side-{i}",
                                    daemon=True) for i, s in enumerate(self.sessions)]
        for t in threads:
            t.start()
        left = len(threads)
        try:
            while left:
                event = out.get()
                left -= event.done
                yield event
        finally:
            if left:  # the reader went away: stop the others, wait for them
                self.stop()
            for t in threads:
                t.join()


def compare(sessions: list[ChatSession], prompt: str) -> list[Answer]:
    """One prompt to each session, answered together with the same settings and seed."""
    out: list = [None] * len(sessions)
    for event in Together(sessions, prompt):
        if event.error:
            raise TuituneError(event.error)
        if event.done:
            out[event.side] = event.answer
    return out
