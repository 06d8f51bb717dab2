"""The one generation path: chat answers, the samples a run logs while training, evaluation.

:class:`Generation` takes a loaded model, its tokenizer, the template and the messages,
and streams the answer as text:

- the prompt is encoded with the template (:func:`tuitune.templates.encode_prompt`, the
  same encoding training used), the system prompt first when there is one;
- the template's stop words that are single special tokens become end-of-sequence ids,
  the others (and the user's) cut the text where they start (:class:`StopWords`);
- sampling is seeded right before the answer, under a process-wide lock, so the same
  seed, settings, model and prompt give the same answer whatever ran before; a greedy
  answer (temperature 0) touches no random state, so a training run's RNG is left alone;
- tokens are generated in a thread and read back in batches (:class:`Streamer`); a
  stop request (:meth:`Generation.stop`, from any thread, or the shared ``stop_event``
  of answers generated together) or a consumer that goes away ends the generation
  after the current token;
- answers to one prompt from two models (Chat's compare mode) are generated together,
  token by token in turn (``turns``, :mod:`tuitune.generation.turns`), each still one
  ``generate()`` here;
- under DeepSpeed ZeRO-3 (``synced_gpus=True``) every rank runs the same forward passes,
  as the partitioned weights need.

When the iteration ends, :attr:`Generation.text` and :attr:`Generation.stats` hold the
answer. :func:`answer` is the whole answer at once. Heavy modules (torch,
transformers) are imported when a generation runs, so this package is light to import.
"""

from __future__ import annotations

import random
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterator

from tuitune.errors import TuituneError, first_line
from tuitune.generation.settings import SETTING_NAMES, GenerationSettings, parse_setting
from tuitune.generation.stream import Detokenizer, Stats, StopWords, Streamer, cancel_criteria
from tuitune.generation.turns import Hold, Turns, hand_over_criteria

# One generation at a time in this process: the seed lives in torch's global RNG,
# which every thread shares, so two interleaved generations would disturb each other
# (answers generated together take it in turns, carrying their RNG state: turns.py).
GENERATE_LOCK = threading.Lock()


def messages_for(prompt: str | None, system: str = "", history: list[dict] | None = None) -> list[dict]:
    """The messages of one request: the system prompt (if any), the history, then the prompt."""
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += list(history or [])
    if prompt is not None:
        msgs.append({"role": "user", "content": prompt})
    return msgs


def encode(tokenizer, template: str, messages: list[dict]) -> list[int]:
    """The prompt's token ids, with the template's assistant header at the end."""
    from tuitune.templates import encode_prompt

    return encode_prompt(tokenizer, template, messages)


def special_stop_ids(tokenizer, words: list[str]) -> tuple[list[int], list[str]]:
    """The stop words that are single special tokens, as ids; and the others, as text."""
    ids: list[int] = []
    text_words: list[str] = []
    special = set(tokenizer.all_special_tokens) | {
        t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values()}
    for w in words:
        tid = tokenizer.convert_tokens_to_ids(w) if w in special else None
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.append(tid)
        else:
            text_words.append(w)
    return ids, text_words


def stop_tokens(model, tokenizer, words: list[str]) -> tuple[list[int], list[str]]:
    """Stop words that are single special tokens become eos ids; the rest are cut from the text."""
    ids, text_words = special_stop_ids(tokenizer, words)
    gen_eos = model.generation_config.eos_token_id
    for e in ([gen_eos] if isinstance(gen_eos, int) else (gen_eos or [])):
        ids.append(e)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(ids)), text_words


def generation_config(model, tokenizer, s: GenerationSettings, max_new: int, eos_ids: list[int]):
    from transformers import GenerationConfig

    base = model.generation_config
    pad = base.pad_token_id if base.pad_token_id is not None else (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0])
    # use_cache: training turns it off in the model's config (gradient checkpointing); answers want it.
    kw: dict = dict(max_new_tokens=max_new, eos_token_id=eos_ids, pad_token_id=pad, bos_token_id=base.bos_token_id,
                    repetition_penalty=s.repetition_penalty, use_cache=True)
    if s.greedy:
        kw.update(do_sample=False)
    else:
        kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k)
    return GenerationConfig(**kw)


class Generation:
    """One answer, streamed: iterate for text pieces; then :attr:`text` and :attr:`stats`.

    ``ids``: the encoded prompt (else ``messages`` are encoded with ``template``).
    ``max_new_tokens``: overrides the settings' (a caller that fitted the context).
    ``prepare``: a context manager factory entered in the generating thread, under the
    lock (chat selects an adapter with it). ``t0``: when the request began, for the
    time to first token (default: now). ``turns`` and ``side``: this answer is side
    ``side`` of several generated together, token by token in turn (:class:`Turns`).
    ``stop_event``: ends the answer too once set (one stop for every side).
    """

    def __init__(self, model, tokenizer, settings: GenerationSettings, *, template: str = "auto",
                 messages: list[dict] | None = None, ids: list[int] | None = None,
                 max_new_tokens: int | None = None, stop_words: list[str] | None = None,
                 prepare: Callable[[], ContextManager] | None = None, synced_gpus: bool = False,
                 t0: float | None = None, turns: Turns | None = None, side: int = 0,
                 stop_event: threading.Event | None = None):
        from tuitune.templates import stop_words as template_stop_words

        self.t0 = time.perf_counter() if t0 is None else t0
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.ids = list(ids) if ids is not None else encode(tokenizer, template, messages or [])
        self.max_new = max_new_tokens or settings.max_new_tokens
        words = list(stop_words) if stop_words is not None else template_stop_words(tokenizer, template)
        self.eos_ids, self.text_words = stop_tokens(model, tokenizer, [*words, *settings.stop])
        self.seed = settings.seed if settings.seed is not None else random.randrange(2**32)
        self.prepare, self.synced_gpus = prepare, synced_gpus
        self.turns, self.side, self.stop_event = turns, side, stop_event
        self.cancel = threading.Event()
        self.text = ""
        self.stats: Stats | None = None
        self.error: BaseException | None = None

    def stop(self) -> None:
        """End the answer after its current token (safe from any thread)."""
        self.cancel.set()

    def __iter__(self) -> Iterator[str]:
        import torch

        model, s = self.model, self.settings
        input_ids = torch.tensor([self.ids], device=model.device)
        gen_cfg = generation_config(model, self.tokenizer, s, self.max_new, self.eos_ids)
        clock: dict = {}
        cancel = self.cancel
        stopped = lambda: cancel.is_set() or (self.stop_event is not None and self.stop_event.is_set())  # noqa: E731
        streamer = Streamer(clock)
        outcome: dict = {}
        # The lock, the adapter (prepare) and, with turns, the hand-over after each token.
        hold = Hold(GENERATE_LOCK, self.prepare, self.turns, self.side, sampled=not s.greedy)
        criteria = [cancel_criteria(cancel, self.stop_event)]
        if self.turns is not None:
            criteria.append(hand_over_criteria(hold))

        def run() -> None:
            try:
                # no_grad, not inference_mode: a training run's model must not keep inference tensors.
                with hold, torch.no_grad():
                    if not s.greedy:
                        from transformers import set_seed

                        set_seed(self.seed)
                    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                         generation_config=gen_cfg, streamer=streamer,
                                         stopping_criteria=criteria, synced_gpus=self.synced_gpus)
                    outcome["n"] = int(out.shape[1] - input_ids.shape[1])
                    outcome["last"] = int(out[0, -1]) if outcome["n"] else None
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                outcome["error"] = exc
            finally:
                clock["end"] = time.perf_counter()
                streamer.finish()

        thread = threading.Thread(target=run, name="tuitune-generate", daemon=True)
        thread.start()
        detok = Detokenizer(self.tokenizer)
        stops = StopWords(self.text_words)
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
            self.text = "".join(pieces)
            error = outcome.get("error")
            if error is not None and not isinstance(error, (KeyboardInterrupt, SystemExit)):
                finish = "error"
            elif stops.hit:
                finish = "stop_word"
            elif stopped():
                finish = "stopped"
            elif outcome.get("last") in self.eos_ids:
                finish = "eos"
            else:
                finish = "length"
            self.stats = Stats(prompt_tokens=len(self.ids), new_tokens=outcome.get("n", len(detok.ids)),
                               ttft=(clock["first"] - self.t0) if "first" in clock else None,
                               seconds=clock.get("end", time.perf_counter()) - self.t0, seed=self.seed,
                               greedy=s.greedy, finish=finish)
            self.error = error
        if self.error is not None:
            if isinstance(self.error, TuituneError):
                raise self.error
            raise TuituneError(f"generation failed ({first_line(self.error)})") from self.error


def answer(model, tokenizer, settings: GenerationSettings, *, template: str = "auto",
           messages: list[dict], **kw) -> Generation:
    """The whole answer at once: a finished :class:`Generation` (``.text``, ``.stats``)."""
    gen = Generation(model, tokenizer, settings, template=template, messages=messages, **kw)
    for _ in gen:
        pass
    return gen


@dataclass
class BatchAnswer:
    text: str
    new_tokens: int
    finish: str           # eos, stop_word, length
    ids: list[int] = field(default_factory=list)   # the answer's token ids (a reward's completion_ids)


def answer_batch(model, tokenizer, settings: GenerationSettings, *, template: str = "auto",
                 conversations: list[list[dict]], batch_size: int = 8,
                 prepare: Callable[[], ContextManager] | None = None,
                 on_batch: Callable[[int], None] | None = None,
                 cancelled: Callable[[], bool] | None = None) -> list[BatchAnswer]:
    """Answers to many prompts, ``batch_size`` at a time with left padding (evaluation).

    The same encoding, stop words and generation config as :class:`Generation`; prompts are
    sorted by length so a batch pads little. Greedy answers are the one-at-a-time answers;
    sampled ones are seeded once per batch. ``on_batch(done)`` after each batch;
    ``cancelled()`` is asked between batches (TuituneError "cancelled").
    """
    import torch

    from tuitune.templates import stop_words as template_stop_words

    encoded = [encode(tokenizer, template, msgs) for msgs in conversations]
    eos_ids, text_words = stop_tokens(model, tokenizer, [*template_stop_words(tokenizer, template), *settings.stop])
    gen_cfg = generation_config(model, tokenizer, settings, settings.max_new_tokens, eos_ids)
    pad = gen_cfg.pad_token_id
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    out: list[BatchAnswer | None] = [None] * len(encoded)
    done = 0
    for start in range(0, len(order), batch_size):
        if cancelled is not None and cancelled():
            raise TuituneError("cancelled")
        idx = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.tensor([[pad] * (width - len(encoded[i])) + encoded[i] for i in idx], device=model.device)
        mask = torch.tensor([[0] * (width - len(encoded[i])) + [1] * len(encoded[i]) for i in idx],
                            device=model.device)
        with GENERATE_LOCK, torch.no_grad():
            if not settings.greedy:
                from transformers import set_seed

                set_seed(settings.seed if settings.seed is not None else random.randrange(2**32))
            with (prepare() if prepare else nullcontext()):
                gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg)
        for row, i in enumerate(idx):
            new = gen[row, width:].tolist()
            ended = next((k for k, tok in enumerate(new) if tok in eos_ids), None)
            if ended is not None:
                new = new[:ended + 1]
            stops = StopWords(text_words)
            text = stops.feed(tokenizer.decode(new, skip_special_tokens=True)) + stops.flush()
            n = len(new)
            finish = "stop_word" if stops.hit else "eos" if ended is not None else "length"
            out[i] = BatchAnswer(text, n, finish, new)
        done += len(idx)
        if on_batch is not None:
            on_batch(done)
    return out  # type: ignore[return-value]


__all__ = ["GENERATE_LOCK", "Turns", "BatchAnswer", "answer_batch", "Generation", "GenerationSettings", "Stats", "StopWords", "Detokenizer", "Streamer",
           "answer", "encode", "messages_for", "stop_tokens", "special_stop_ids", "generation_config", "SETTING_NAMES", "parse_setting"]
