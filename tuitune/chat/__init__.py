"""Chat: load a model (or base + adapter, a run, a run's checkpoint) and stream answers.

Headless (no textual). Heavy modules (torch, transformers, peft) are imported inside
the functions that need them, so ``import tuitune.chat`` stays light.

- What can be loaded is :func:`tuitune.sources.resolve`'s to say (a model folder, an
  adapter folder, a run, ``RUN:checkpoint-N``, ``RUN:base``, a hub id).
- Loading (the base, its adapters, the tokenizer, the template check) is :mod:`tuitune.loading`'s,
  the one loader eval, training and data inspect use too.
- ``session``: :class:`ChatSession`, a conversation with one loaded model. The prompt is
  rendered with the model's template (``auto``: the tokenizer's own, or a named one;
  a run's own template and system prompt when a run is loaded), and answered through
  :class:`tuitune.generation.Generation`, the path training samples and evaluation
  use too. A multi-turn history is kept and trimmed from the oldest turn when prompt +
  ``max_new_tokens`` would pass the model's context. Each answer records time to first
  token and tokens per second (:class:`tuitune.generation.Stats`). Compare mode's
  :class:`Together` streams one prompt's answers from two sessions together, token by
  token in turn; a stop ends both where they are.
"""

from __future__ import annotations

from tuitune.chat.session import Answer, ChatSession, Event, Together, compare, load_pair, save_conversations
from tuitune.generation import SETTING_NAMES, GenerationSettings, Stats
from tuitune.sources import MODEL_HELP, ModelSource

__all__ = ["GenerationSettings", "ModelSource", "ChatSession", "Stats", "Answer", "Together", "Event",
           "load_pair", "compare", "save_conversations", "SETTING_NAMES", "MODEL_HELP"]
