"""The pieces of a streamed generation: its stats, the streamer, stop words, incremental decoding.

Each exists because transformers has no equivalent that fits: its ``TextIteratorStreamer``
wakes the reader for every token (the GIL then costs the generating thread) and decodes
without holding back half a character; ``stop_strings`` stops generating but leaves the
stop word in the text, and text cut at a stop word must not show a stop word's start.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass


@dataclass
class Stats:
    """How one answer went. ``ttft``: seconds from the request to the first new token."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    ttft: float | None = None
    seconds: float = 0.0
    seed: int | None = None
    greedy: bool = False
    finish: str = ""            # eos, length, stop_word, stopped (by the user), error
    trimmed_turns: int = 0      # oldest turns dropped to fit the context
    note: str = ""

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_s": round(self.tokens_per_s, 2)}

    def line(self, timings: bool = True) -> str:
        parts = [f"{self.new_tokens} tokens"]
        if timings and self.ttft is not None:
            parts.append(f"first token {self.ttft * 1000:.0f} ms")
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.greedy:
            parts.append("greedy")
        elif self.seed is not None:
            parts.append(f"seed {self.seed}")
        if self.finish in ("length", "stopped"):
            parts.append({"length": "hit max tokens", "stopped": "stopped"}[self.finish])
        return " · ".join(parts)


class Streamer:
    """A transformers streamer: the generating thread only appends token ids to a list.

    The reader is woken for the first token and at the end, and otherwise collects what
    has piled up every ``POLL`` seconds: waking it for every token would cost the
    generating thread the GIL a few hundred times a second.
    """

    POLL = 0.02

    def __init__(self, clock: dict):
        self.clock = clock
        self.prompt_seen = False
        self.ids: list[int] = []
        self.taken = 0
        self.done = False
        self.wake = threading.Event()

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        if "first" not in self.clock:
            self.clock["first"] = time.perf_counter()
            self.wake.set()

    def end(self) -> None:
        pass

    def finish(self) -> None:
        self.done = True
        self.wake.set()

    def take(self) -> tuple[list[int], bool]:
        """Wait for new ids (or the end): (new ids, finished)."""
        while True:
            done = self.done  # read before the ids: no id appended before the end is missed
            n = len(self.ids)
            if n > self.taken or done:
                new = self.ids[self.taken:n]
                self.taken = n
                return new, done and n == len(self.ids)
            self.wake.wait(self.POLL)
            if not self.done:
                self.wake.clear()


class StopWords:
    """Cuts text at the first stop word, holding back a tail that may be the start of one."""

    def __init__(self, words):
        self.words = [w for w in words if w]
        self.pending = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if self.hit:
            return ""
        buf = self.pending + text
        if not self.words:
            self.pending = ""
            return buf
        cut = min((i for i in (buf.find(w) for w in self.words) if i >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            self.pending = ""
            return buf[:cut]
        hold = 0
        for w in self.words:
            for k in range(min(len(w) - 1, len(buf)), hold, -1):
                if buf.endswith(w[:k]):
                    hold = k
                    break
        self.pending = buf[len(buf) - hold:] if hold else ""
        return buf[:len(buf) - hold]

    def flush(self) -> str:
        out, self.pending = ("" if self.hit else self.pending), ""
        return out


class Detokenizer:
    """Incremental decoding that never splits a character (byte-level BPE pieces of CJK text)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def add(self, ids: list[int]) -> str:
        self.ids.extend(ids)
        decode = self.tok.decode
        prefix_text = decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        new_text = decode(self.ids[self.prefix:], skip_special_tokens=True)
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return new_text[len(prefix_text):]
        return ""

    def rest(self) -> str:
        prefix_text = self.tok.decode(self.ids[self.prefix:self.read], skip_special_tokens=True)
        new_text = self.tok.decode(self.ids[self.prefix:], skip_special_tokens=True)
        self.prefix = self.read = len(self.ids)
        return new_text[len(prefix_text):]


def cancel_criteria(event: threading.Event, also: threading.Event | None = None):
    """Stops the generation once ``event`` (or ``also``, e.g. one stop for every side of a compare) is set."""
    import torch
    from transformers import StoppingCriteria

    cache: dict = {}

    class _Cancel(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            key = (input_ids.shape[0], input_ids.device, event.is_set() or (also is not None and also.is_set()))
            out = cache.get(key)
            if out is None:
                out = cache[key] = torch.full(key[:1], key[2], dtype=torch.bool, device=key[1])
            return out

    return _Cancel()
