"""Preference tuning (tasks ``dpo`` and ``orpo``) on TRL's trainers, in the same run folder as SFT.

TRL does the learning: ``trl.DPOTrainer`` (its losses, reference log-probs, reward metrics) and
``trl.experimental.orpo.ORPOTrainer``. What is ours is the data: the pairs are tokenized with the
run's template by :func:`tuitune.encode.encode_preference`, the same segments SFT and chat use,
and cached per file like SFT data; the trainers get them already tokenized (TRL would render the
tokenizer's chat template, a second rendering of a named template that need not agree with ours).

The reference model of DPO: with an adapter (lora, qlora) the base with the adapter switched off,
so there is no second copy of the weights; for a full fine-tune a frozen copy, which TRL loads;
``preference.reference: precompute`` computes its log-probs once before training instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuitune.data.records import with_system
from tuitune.errors import TuituneError
from tuitune.train.tokenized import cached_or_records, save_cached


def build_preference_dataset(cfg, tokenizer, path: Path, *, cache_dir: Path, log=print):
    """The pairs of ``path`` as ``prompt_ids``/``chosen_ids``/``rejected_ids`` (cached by content)."""
    from datasets import Dataset

    from tuitune.encode import encode_preference

    path = Path(path)
    cached, records, target = cached_or_records(
        cfg, tokenizer, path, pack=False, cache_dir=cache_dir, what="pairs", log=log,
        missing="convert your preference pairs with `tuitune data convert` and point data.train at the .jsonl "
                "it writes")
    if cached is not None:
        return cached
    rows = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    dropped = 0
    for rec in records:
        enc = encode_preference(tokenizer, with_system(rec, cfg.data.system), cfg.template, cfg.data.max_length)
        if enc is None or not enc["chosen_ids"] or not enc["rejected_ids"]:
            dropped += 1
            continue
        for k in rows:
            rows[k].append(enc[k])
    if not rows["prompt_ids"]:
        raise TuituneError(f"data: every pair of {path} has a prompt of data.max_length {cfg.data.max_length} "
                           "tokens or more, leaving nothing of the answers; raise data.max_length")
    if dropped:
        log(f"{dropped} pairs of {path.name} have a prompt that fills data.max_length; skipped")
    return save_cached(Dataset.from_dict(rows), target)


def preference_arguments(cfg, base_args):
    """TRL's DPOConfig / ORPOConfig holding every value of the run's ``TrainingArguments``."""
    from dataclasses import fields

    from transformers import TrainingArguments

    if cfg.task == "dpo":
        from trl import DPOConfig as Config
    else:
        from trl.experimental.orpo import ORPOConfig as Config
    kwargs = {f.name: getattr(base_args, f.name) for f in fields(TrainingArguments) if f.init}
    p = cfg.preference
    kwargs.update(beta=p.beta, max_length=cfg.data.max_length)
    if cfg.task == "dpo":
        kwargs.update(loss_type=[p.loss_type], label_smoothing=p.label_smoothing,
                      precompute_ref_log_probs=p.reference == "precompute", padding_free=False)
    return Config(**kwargs)


def make_trainer(cfg, *, model, args, train_dataset, eval_dataset, tokenizer, callbacks) -> Any:
    """The preference trainer for ``cfg.task`` on the already tokenized pairs."""
    if cfg.task == "dpo":
        from trl import DPOTrainer

        class TuituneDPOTrainer(DPOTrainer):
            def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
                return dataset  # tokenized by encode_preference, with the run's template

        # A full fine-tune's copy TRL loads itself (ref_model None, no adapter to switch off).
        ref_model = _reference_copy(cfg) if reference_mode(cfg) == "copy" and cfg.uses_adapter else None
        trainer = TuituneDPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=train_dataset,
                                    eval_dataset=eval_dataset, processing_class=tokenizer,
                                    callbacks=list(callbacks))
        drop_reference_adapter(trainer)
        return trainer
    from trl.experimental.orpo import ORPOTrainer

    class TuituneORPOTrainer(ORPOTrainer):
        def tokenize_row(self, feature, model=None):
            # The pair is tokenized already (encode_preference); ORPO's own tokenization of prompt
            # strings would add its BOS/EOS guesses around our template's tokens.
            p, out = list(feature["prompt_ids"]), {}
            out["prompt_input_ids"], out["prompt_attention_mask"] = p, [1] * len(p)
            for side in ("chosen", "rejected"):
                ans = list(feature[f"{side}_ids"])
                out[f"{side}_input_ids"] = p + ans
                out[f"{side}_attention_mask"] = [1] * (len(p) + len(ans))
                out[f"{side}_labels"] = [-100] * len(p) + ans
            return out

        def _track_num_input_tokens(self, inputs):
            # The Trainer counts "input_ids", which ORPO's batches do not have: count both sides' tokens.
            if self.args.include_num_input_tokens_seen == "no" or "chosen_attention_mask" not in inputs:
                return super()._track_num_input_tokens(inputs)
            n = inputs["chosen_attention_mask"].sum() + inputs["rejected_attention_mask"].sum()
            self.state.num_input_tokens_seen += int(self.accelerator.gather(n.to(self.args.device).reshape(1)).sum())

    def with_text(ds):
        # ORPO's dataset steps look for prompt/chosen/rejected columns before tokenize_row.
        if ds is None:
            return None
        dec = lambda ids: tokenizer.decode(ids, skip_special_tokens=False)  # noqa: E731
        return ds.map(lambda ex: {"prompt": dec(ex["prompt_ids"]), "chosen": dec(ex["chosen_ids"]),
                                  "rejected": dec(ex["rejected_ids"])}, desc="preparing pairs for ORPO")

    return TuituneORPOTrainer(model=model, args=args, train_dataset=with_text(train_dataset),
                              eval_dataset=with_text(eval_dataset), processing_class=tokenizer,
                              callbacks=list(callbacks))


def reference_mode(cfg) -> str | None:
    """How DPO gets its reference log-probs: ``adapter-off`` (the base with the adapter switched off),
    ``copy`` (a frozen copy of the base, loaded), ``precompute`` (once, before training); None for ORPO."""
    if cfg.task != "dpo":
        return None
    ref = cfg.preference.reference
    if ref == "precompute":
        return "precompute"
    return "adapter-off" if cfg.uses_adapter and ref == "auto" else "copy"


def _reference_copy(cfg):
    """A frozen copy of the base model (``preference.reference: copy`` with an adapter)."""
    from transformers import AutoModelForCausalLM

    from tuitune.config import to_model_kwargs

    kwargs = to_model_kwargs(cfg)
    if kwargs.get("quantization_config") is None:
        kwargs.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_pretrained(**kwargs)
    model.requires_grad_(False)
    return model.eval()


def drop_reference_adapter(trainer) -> None:
    """TRL gives a model that is already a peft model a second adapter, "ref", a copy of the first,
    as the reference. Our adapter is fresh (the base with it off is the same model), so the base
    with the adapter off serves, and the copy (and its memory, and a second set of
    ``modules_to_save``) goes."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.ref_model is None and "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
        model.set_adapter("default")

