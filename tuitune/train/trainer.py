"""The batches and the loss: padding-free rows, and the vocabulary head only where a label is.

Two costs of a plain ``Trainer`` run on chat data that change nothing in what is learned:

* **Padding.** A batch of B conversations padded to its longest one computes every layer on
  the pad too (on the real model's self-cognition data, 14% of each batch). Where attention can
  keep samples apart by ``position_ids`` (sdpa through :mod:`tuitune.train.attention`,
  flash-attention's variable-length path), :class:`BatchCollator` lays the batch's samples end to
  end in one row instead, with positions restarting at each sample: the same samples, the same
  label tokens and the same loss, and no pad at all. This is what TRL calls ``padding_free``;
  done here because our collator also carries packed rows, and the Trainer's own
  ``DataCollatorWithFlattening`` drops the token count below.
* **The head.** The logits over the vocabulary (49k entries for SmolLM2, 150k for Qwen) are
  computed, kept for the backward and soft-maxed at every position, while only answer tokens
  have a label: on chat data a third to a half of them. :class:`TuituneTrainer` asks the model
  for logits only at the positions whose next token is trained (``logits_to_keep``, which
  transformers' causal LMs take as a tensor of positions) and hands the model's own loss the
  labels of exactly those positions (``shift_labels``), so its reduction, the gradient
  accumulation scaling and ``num_items_in_batch`` stay the library's. No library does this for
  the Trainer's loss: Liger's fused cross-entropy saves the memory but not the work, and needs
  its kernels.
* **The logits.** Even at those positions the logits are a (positions x vocabulary) float32
  tensor, kept for the backward. With ``training.kernels`` auto (or liger where Liger cannot
  patch the model) the model runs without its head and the head and loss run a few hundred
  positions at a time (:mod:`tuitune.train.chunked_loss`), under the Trainer's own ``compute_loss``.

All are exact: the loss and the gradients equal those of the padded batch with full logits
(``tests/test_train_batches.py``, ``tests/test_loss_chunked.py``).
"""

from __future__ import annotations

import inspect
from typing import Any

from transformers import Trainer

IGNORE_INDEX = -100

#: Attention implementations that keep the samples of one row apart by their positions without
#: a (row x row) mask. Eager and flex attention would build that mask: for a batch of 16 x 2048
#: tokens it has a billion entries, so they get padded batches.
FLATTENS = {"sdpa", "flash_attention_2", "flash_attention_3", "flash_attention_4"}


def flattens(model, max_length: int) -> bool:
    """Whether batches for ``model`` are laid end to end in one row (see the module docstring).

    Attention one sample at a time is plain causal attention. A model with a sliding window
    (Mistral's 4096, Gemma's local layers) sees less than that on a sample longer than its
    window, so it is only flattened where no sample can be that long (``max_length``).
    """
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) not in FLATTENS:
        return False
    window = getattr(config, "sliding_window", None)
    sliding = bool(window) and getattr(config, "use_sliding_window", True) is not False
    sliding = sliding or any(t != "full_attention" for t in (getattr(config, "layer_types", None) or []))
    return not sliding or (bool(window) and max_length <= window)


class BatchCollator:
    """A batch of tokenized rows: end to end in one row (``flatten``), else right-padded.

    Flattened, each sample's ``position_ids`` restart at 0 (a packed row keeps its own, which
    already restart at each of its samples) and each sample's first label is masked, as in a
    packed row, so no sample learns to predict the next one's first token; in a padded row that
    label is never a target either. Padded: ``input_ids`` with pad, labels with -100; plain rows
    get an attention mask, packed rows none (transformers then reads the sample boundaries from
    ``position_ids``; the padding tail gets positions of its own, one more "sample" with no
    labels that nothing attends to).

    Batches without an attention mask carry ``real_tokens``, the number of tokens that are not
    padding: the Trainer would count tokens that are not the pad id, and several tokenizers pad
    with their end-of-turn token (SmolLM2's ``<|im_end|>``), which every turn ends with.
    """

    def __init__(self, pad_id: int, flatten: bool = False):
        self.pad_id = pad_id
        self.flatten = flatten

    def __call__(self, features: list[dict]) -> dict:
        import torch

        packed = "position_ids" in features[0]
        if self.flatten:
            ids: list[int] = []
            labels: list[int] = []
            pos: list[int] = []
            for f in features:
                n = len(f["input_ids"])
                if not n:
                    continue
                lab = list(f["labels"])
                if not packed:
                    lab[0] = IGNORE_INDEX
                ids += f["input_ids"]
                labels += lab
                pos += list(f["position_ids"]) if packed else list(range(n))
            return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
                    "position_ids": torch.tensor([pos]), "real_tokens": torch.tensor([len(ids)])}
        width = max(len(f["input_ids"]) for f in features)
        ids_rows, label_rows, pos_rows, mask = [], [], [], []
        for f in features:
            n = len(f["input_ids"])
            pad = width - n
            ids_rows.append(list(f["input_ids"]) + [self.pad_id] * pad)
            label_rows.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            if packed:
                pos_rows.append(list(f["position_ids"]) + list(range(pad)))
            mask.append([1] * n + [0] * pad)
        batch = {"input_ids": torch.tensor(ids_rows), "labels": torch.tensor(label_rows)}
        if packed:
            batch["position_ids"] = torch.tensor(pos_rows)
            batch["real_tokens"] = torch.tensor([sum(map(sum, mask))])
        else:
            batch["attention_mask"] = torch.tensor(mask)
        return batch


def _base(model):
    """The transformers model inside peft's and accelerate's wrappers."""
    while hasattr(model, "module"):  # DDP / DeepSpeed engine
        model = model.module
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def head_on_labels_only(model) -> bool:
    """Whether ``model`` takes a tensor of positions as ``logits_to_keep`` and lets its loss take
    ``shift_labels`` (transformers' causal LMs do; a model with its own forward may not)."""
    base = _base(model)
    try:
        forward = inspect.signature(base.forward).parameters
        loss = inspect.signature(base.loss_function).parameters
    except (AttributeError, TypeError, ValueError):
        return False
    return "logits_to_keep" in forward and "shift_labels" in loss


def trained_positions(labels):
    """(positions, their targets): the positions whose next token has a label, in any row (a 1-D
    tensor, as ``logits_to_keep`` takes it), and those next labels per row; None where every
    position is trained (a pretraining batch: nothing to leave out)."""
    import torch

    following = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    keep = (following != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
    if keep.numel() >= labels.shape[1] - 1:
        return None
    return keep, following[:, keep]


class TuituneTrainer(Trainer):
    """``transformers.Trainer`` with the head computed only at trained positions, the loss of
    ``training.kernels`` (:mod:`tuitune.train.kernels`), and the token count of
    :class:`BatchCollator`'s batches."""

    def __init__(self, *args, kernels: str = "none", **kwargs):
        super().__init__(*args, **kwargs)
        plain_loss = self.label_smoother is None and self.compute_loss_func is None
        self._head_on_labels = head_on_labels_only(self.model) and plain_loss
        #: Where the chunked loss replaces the model's (None: the model's own loss, or Liger's).
        self._chunked_head = None
        if kernels != "none" and self._head_on_labels:
            from tuitune.train.kernels import liger_has
            from tuitune.train.chunked_loss import chunkable_head

            base = _base(self.model)
            if not (self.args.use_liger_kernel and liger_has(base)):
                self._chunked_head = chunkable_head(base)

    @property
    def chunked_loss(self) -> bool:
        """Whether the loss is the chunked one (:mod:`tuitune.train.chunked_loss`)."""
        return self._chunked_head is not None

    def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch=None):
        inputs = dict(inputs)
        inputs.pop("real_tokens", None)
        labels = inputs.get("labels")
        if self._head_on_labels and labels is not None:
            kept = trained_positions(labels)
            if kept is not None:
                inputs["logits_to_keep"], inputs["shift_labels"] = kept
        if self._chunked_head is not None and labels is not None and (
                not return_outputs or self.args.prediction_loss_only):
            # The Trainer's own compute_loss around the chunked loss: its reduction and scaling
            # (num_items_in_batch when the model takes it, the mean otherwise, the factor for
            # tokens averaged across devices) stay the library's.
            model = _LossFromHidden(model, self._chunked_head)
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def _track_num_input_tokens(self, inputs):
        real = inputs.get("real_tokens") if isinstance(inputs, dict) else None
        if real is None or self.args.include_num_input_tokens_seen != "non_padding":
            return super()._track_num_input_tokens(inputs)
        # As the Trainer counts (gathered over the processes), with the count the collator made.
        count = self.accelerator.gather(real.to(self.args.device).sum().reshape(1)).sum()
        self.state.num_input_tokens_seen += int(count.item())


class _LossFromHidden:
    """What ``Trainer.compute_loss`` calls as the model: the model without its head (no logits),
    then the head and the cross-entropy chunk by chunk over the trained positions, reduced as
    transformers' ``ForCausalLMLoss`` reduces (the sum over ``num_items_in_batch`` when it is
    given, else the mean over the labelled positions)."""

    def __init__(self, model, head):
        self.model, self.head = model, head

    def __call__(self, labels, shift_labels=None, logits_to_keep=None, num_items_in_batch=None, **inputs):
        import torch

        from tuitune.train.chunked_loss import chunked_cross_entropy

        if shift_labels is None:  # every position trained (a pretraining batch)
            shift_labels = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
        none = torch.empty(0, dtype=torch.long, device=labels.device)
        # The last hidden state is the final norm's output (transformers ties hidden_states[-1]
        # to last_hidden_state); -1 asks for that one only.
        hidden = self.model(**inputs, logits_to_keep=none, output_hidden_states=-1).hidden_states[-1]
        if logits_to_keep is not None:
            hidden = hidden[:, logits_to_keep]
        targets = shift_labels.reshape(-1).to(hidden.device)
        total = chunked_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), targets, self.head)
        count = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
        if torch.is_tensor(count):
            count = count.to(total.device)
        return {"loss": total / count}
