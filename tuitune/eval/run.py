"""One evaluation: the target and its baseline on the same held-out records.

:func:`plan` resolves what to compare (through :func:`tuitune.sources.resolve`, the one
resolver) and which data (:mod:`tuitune.eval.heldout`: the file given, the run's ``data.eval``,
or the test side of the split whose train side the run trained on), and checks it all before a
model loads. :func:`evaluate` computes, for each side, the held-out loss (the training encoding
and mask) and the answers to each record's prompt (:func:`tuitune.generation.answer_batch`, the
generation path chat and the training samples use), scores them against the references, and
writes the report. A GRPO run's held-out prompt records have no answer to measure a loss on: each
side's answers are scored by the run's own rewards instead (:mod:`tuitune.eval.prompt_scores`).
Two sides on one base share one copy of it in memory, as Chat's compare mode does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tuitune.errors import FIELD, TuituneError
from tuitune.eval.heldout import HeldOut, pick, run_config, shown
from tuitune.eval.prompt_scores import RewardSet
from tuitune.loading import adapter_selector, can_share_base, check_template, load_model, load_tokenizer
from tuitune.sources import ModelSource

Progress = Callable[[str, int, int], None]   # (what, done, total)


@dataclass
class EvalPlan:
    target: ModelSource
    baseline: ModelSource | None
    data: Path | None               # None: no held-out file (--bench alone; no_data says why)
    records: list[dict]
    prompts: list[list[dict]]       # each record's messages up to its last question
    references: list[str]           # each record's last answer ('' for pretraining text)
    template: str = "auto"
    system: str = ""
    max_length: int = 2048
    task: str = "sft"
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)
    pairs: bool = False             # preference pairs: chosen-vs-rejected log-probs instead of answers
    held: HeldOut | None = None     # which file, why, and its records (the whole file's)
    workspace: Path = Path(".")
    rewards: RewardSet | None = None   # prompt records (task grpo): the run's rewards score the answers
    where: list[str] = field(default_factory=list)   # each prompt record's file and line (a reward's error)
    bench: object = None            # tuitune.eval.bench.BenchPlan: general ability (--bench)
    no_data: str = ""               # why there is no held-out file (with --bench, the evaluation goes on)

    @property
    def rewarded(self) -> bool:
        return self.rewards is not None

    @property
    def generates(self) -> bool:
        return self.task != "pretrain" and not self.pairs


def prompt_of(record: dict) -> tuple[list[dict], str]:
    """The messages up to the record's last question, and its last answer (the reference)."""
    from tuitune.templates import to_messages

    turns = record["conversation"]
    return to_messages([*turns[:-1], {**turns[-1], "output": None}]), (turns[-1].get("output") or "").strip()


def _need_answers(path: Path) -> None:
    """A record without an answer is no evaluation record: say what the answers are for."""
    from tuitune.data.io import iter_json_items

    for where, item in iter_json_items(path):
        turns = item.get("conversation") if isinstance(item, dict) else None
        if isinstance(turns, list) and turns and isinstance(turns[-1], dict) and not turns[-1].get("output"):
            raise TuituneError(f"{path}: {where}: no reference answer (\"output\" of its last turn); answers are "
                               "scored against one, so every record needs it. Pretraining text has none: set "
                               "task: pretrain in the run's config, and its held-out loss is measured alone")


def plan(target: str, workspace: str | Path = ".", *, data: str | Path | None = None, against: str | None = None,
         checkpoints: bool = False, max_samples: int | None = None, base: str | Path | None = None,
         need_data: bool = True) -> EvalPlan:
    """Everything checked before a model is loaded; TuituneError names what is wrong.

    ``base``: the folder that paths in messages are relative to (the CLI's current folder).
    ``need_data=False`` (``--bench``): a target with no held-out file is no error, the plan has no records.
    """
    from tuitune.data import load_records
    from tuitune.sources import resolve

    if max_samples is not None and max_samples < 1:
        raise TuituneError(f"{FIELD} {max_samples}: give 1 or more (leave it out for every record)",
                           field="max_samples")
    workspace = Path(workspace)
    src = resolve(target, workspace)
    cfg = run_config(src)
    if against in (None, "base"):
        if src.adapter is None and src.run is None:
            if against == "base":
                raise TuituneError(f"{src.label} is a model folder with no run or adapter, so its base is unknown; "
                                   f"give {FIELD}", field="against", flag="--against MODEL")
            baseline = None
        else:
            baseline = ModelSource(cfg.model_path() if cfg is not None else src.base, label=f"{src.run}:base"
                                   if src.run else f"{Path(src.base).name} (base)", template=src.template,
                                   trust_remote_code=src.trust_remote_code, system=src.system, run=src.run)
    else:
        baseline = resolve(against, workspace)
    try:
        held = pick(src, cfg, data, workspace, base)
        if not held.path.is_file():
            raise TuituneError(f"{shown(held.path, base)}: no such data file; give {FIELD} with a conversation "
                               "JSONL (the held-out split)", field="data")
    except TuituneError as exc:
        if data is not None or need_data or checkpoints:
            raise
        return EvalPlan(src, baseline, None, [], [], [], template=src.template or "auto", system=src.system or "",
                        task=cfg.task if cfg is not None else "sft", workspace=workspace, no_data=str(exc))
    path = held.path
    task = cfg.task if cfg is not None else "sft"
    from tuitune.data.io import iter_json_items
    from tuitune.data.preference import conversation_of, is_preference
    from tuitune.data.records import PROMPT_TASKS, is_prompt_record
    from tuitune.eval.prompt_scores import load_prompt_records, prompt_messages

    first = next((item for _, item in iter_json_items(path)), None)
    rewards, where = None, []
    pairs = not (task in PROMPT_TASKS or is_prompt_record(first)) and (
        is_preference(first) or (cfg is not None and cfg.is_preference))
    if task in PROMPT_TASKS or is_prompt_record(first):
        rewards = RewardSet.of_run(src, cfg, checkpoints)
        records, where = load_prompt_records(path)
    else:
        if task != "pretrain" and not pairs:
            _need_answers(path)
        # Pairs are scored as pairs whatever the run learned (an SFT run can be asked which answer it prefers).
        records = load_records(path, task="dpo" if pairs else ("any" if cfg is None or cfg.is_preference else task))
    if not records:
        raise TuituneError(f"{path}: no records to evaluate on")
    held.records = len(records)
    if max_samples:
        records, where = records[:max_samples], where[:max_samples]
    prompts, refs = [], []
    for rec in records:
        if rewards is not None:
            msgs, ref = prompt_messages(rec, src.system)
        else:
            msgs, ref = prompt_of(conversation_of(rec, rec["chosen"]) if pairs else rec)
        prompts.append(msgs)
        refs.append(ref)
    eps: list[tuple[int, Path]] = []
    if checkpoints:
        if src.run_dir is None:
            raise TuituneError(f"{FIELD} needs a run, and {src.label} is not one", field="checkpoints")
        from tuitune.train.runfolder import RunFolder

        eps = [(int(p.name.rsplit("-", 1)[-1]), p) for p in RunFolder(src.run_dir).list_checkpoints()]
        if not eps:
            raise TuituneError(f"run {src.run} has no complete checkpoint yet (training.save_steps)")
    return EvalPlan(src, baseline, path, records, prompts, refs, template=src.template or "auto",
                    system=src.system or "", max_length=cfg.data.max_length if cfg is not None else 2048,
                    task=task, checkpoints=eps, pairs=pairs, held=held, workspace=workspace, rewards=rewards,
                    where=where)


class _Models:
    """The loaded models: sides on one base share it, each side picks its adapter (or none)."""

    def __init__(self, plan: EvalPlan, dtype: str, say: Callable[[str], None]):
        self.plan, self.dtype, self.say = plan, dtype, say
        t, b = plan.target, plan.baseline
        self.shared = (b is not None and Path(t.base) == Path(b.base) and t.trust_remote_code == b.trust_remote_code
                       and can_share_base([t.adapter, b.adapter]))
        self.tokenizer = load_tokenizer(t.tokenizer_dir, t.trust_remote_code)
        check_template(self.tokenizer, plan.template, t.label)
        self.loaded = None

    def load(self, side: str):
        """(model, prepare) for ``side``; a model no longer needed is freed first."""
        t, b = self.plan.target, self.plan.baseline
        src = t if side == "target" else b
        if self.shared:
            if self.loaded is None:
                adapters = {n: s.adapter for n, s in (("target", t), ("baseline", b)) if s.adapter is not None}
                self.loaded = load_model(t.base, adapters, dtype=self.dtype, trust_remote_code=t.trust_remote_code,
                                         progress=self.say)
        else:
            self.free()
            self.loaded = load_model(src.base, {side: src.adapter} if src.adapter else {}, dtype=self.dtype,
                                     trust_remote_code=src.trust_remote_code, progress=self.say)
        model = self.loaded.model
        name = side if src.adapter is not None else None
        return model, adapter_selector(model, self.loaded.is_peft, name)

    def free(self) -> None:
        import gc

        self.loaded = None
        gc.collect()


def spec_of(src: ModelSource) -> str:
    """What names ``src`` again for the resolver (Chat, another evaluation): a run's form, else a folder."""
    if src.run is not None:
        return src.label
    return str(src.adapter) if src.adapter is not None else src.base


def default_output(workspace: str | Path, target_label: str) -> Path:
    from tuitune.eval.report import now_stamp

    from tuitune.fsutil import slug

    return Path(workspace) / "evals" / f"{slug(target_label, 'model')}-{now_stamp()}"


def evaluate(p: EvalPlan, out: str | Path, *, settings=None, dtype: str = "auto", batch_size: int = 8,
             force: bool = False, progress: Progress | None = None, log: Callable[[str], None] | None = None,
             cancelled: Callable[[], bool] | None = None) -> tuple[Path, dict]:
    """Run the plan and write the report to ``out``; returns (folder, report)."""
    from tuitune.eval.loss import encode_records, record_losses
    from tuitune.eval.metrics import corpus_scores, sentence_scores
    from tuitune.eval.bench import compare as bench_compare
    from tuitune.eval.report import side_summary, verdict, write_report
    from tuitune.fsutil import fix_modes, make_temp_dir, publish_dir, refuse_existing
    from tuitune.generation import GenerationSettings, answer_batch

    settings = settings or GenerationSettings(temperature=0, max_new_tokens=256)
    out = Path(out)
    refuse_existing(out, force=force, folder=True)
    say = log or (lambda _m: None)
    tell = progress or (lambda *_a: None)
    t0 = time.time()
    models = _Models(p, dtype, say)
    tok = models.tokenizer
    if p.pairs:
        from tuitune.eval.loss import encode_pair_sides

        encoded = encode_pair_sides(tok, p.records, template=p.template, system=p.system, max_length=p.max_length)
    elif p.rewarded or not p.records:
        encoded = []   # prompt records: no answer to measure a loss on; --bench alone: no held-out records
    else:
        encoded = encode_records(tok, p.records, template=p.template, system=p.system, max_length=p.max_length,
                                 task=p.task)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    convs = [[{"role": "system", "content": p.system}] + m if p.system and m[0]["role"] != "system" else m
             for m in p.prompts]
    results: dict[str, dict] = {}
    sides = ["target"] + (["baseline"] if p.baseline is not None else [])
    bench_scores, clock = {}, None
    if p.bench is not None:
        from tuitune.eval.bench import Clock

        clock, bench_tok = Clock(len(sides), tell), load_tokenizer(p.target.tokenizer_dir, p.target.trust_remote_code)
    for side in sides:
        model, prepare = models.load(side)
        if p.bench is not None:   # general ability: lm-eval's tasks on this side (tuitune.eval.bench)
            from tuitune.eval.bench import score

            say(f"{side}: general ability ({', '.join(p.bench.names)})")
            clock.start_side("tuned" if side == "target" else "base")
            bench_scores[side] = score(model, bench_tok, prepare, p.bench, batch_size=batch_size, clock=clock,
                                       cancelled=cancelled)
        if not p.records:
            results[side] = {"summary": {}}
            continue
        n = len(encoded)
        losses = []
        if encoded:
            say(f"{side}: held-out loss on {n} " + ("answers of pairs" if p.pairs else "records"))
            losses = record_losses(model, encoded, pad_id=pad, prepare=prepare, cancelled=cancelled,
                                   on_batch=lambda d, side=side, n=n: tell(f"loss ({side})", d, n))
        answers = scores = []
        corpus = {}
        if p.pairs:
            from tuitune.eval.loss import pair_scores

            scores = pair_scores(losses)
            results[side] = {"losses": losses, "answers": [], "scores": scores,
                             "summary": side_summary(losses[0::2], [], [], {}, 0, pairs=scores)}
            continue
        if p.generates:
            n = len(convs)
            say(f"{side}: answering {n} prompts")
            answers = answer_batch(model, tok, settings, template=p.template, conversations=convs,
                                   batch_size=batch_size, prepare=prepare, cancelled=cancelled,
                                   on_batch=lambda d, side=side, n=n: tell(f"answers ({side})", d, n))
            if p.rewarded:
                scores = p.rewards.score(tok, p.template, convs, answers, p.references, p.where)
            else:
                scores = [sentence_scores(a.text, ref) for a, ref in zip(answers, p.references)]
                corpus = corpus_scores([a.text for a in answers], p.references)
        results[side] = {"losses": losses, "answers": answers, "scores": scores,
                         "summary": p.rewards.summary(answers, scores) if p.rewarded else
                         side_summary(losses, answers, scores, corpus, settings.max_new_tokens)}
    curve = []
    if p.checkpoints:
        curve = _checkpoint_losses(p, models, encoded, pad, tell, cancelled, say)
    models.free()
    records = []
    for i, (msgs, ref) in enumerate(zip(p.prompts, p.references)):
        rec = {"index": i, "prompt": msgs[-1]["content"], "reference": ref, "mark": None}
        if p.pairs:
            rec["rejected"] = p.records[i]["rejected"]
            for side in sides:
                rec[side] = results[side]["scores"][i]
            if p.baseline is not None:
                rec["change"] = rec["target"]["margin"] - rec["baseline"]["margin"]
                rec["verdict"] = verdict(rec["change"])
            records.append(rec)
            continue
        for side in sides:
            r = results[side]
            rec[side] = {"loss": r["losses"][i].loss, "tokens": r["losses"][i].tokens} if r["losses"] else {}
            if p.generates:
                a = r["answers"][i]
                rec[side].update(answer=a.text, new_tokens=a.new_tokens, finish=a.finish, **r["scores"][i])
        if p.generates and p.baseline is not None:
            key = "reward" if p.rewarded else "rouge_l"   # a GRPO run: its weighted reward
            rec["change"] = rec["target"][key] - rec["baseline"][key]
            rec["verdict"] = verdict(rec["change"])
        records.append(rec)
    ident = lambda s: {"label": s.label, "spec": spec_of(s), "base": s.base,  # noqa: E731
                       "adapter": str(s.adapter) if s.adapter else None, "run": s.run, "checkpoint": s.checkpoint}
    report = {"version": 1, "created": time.time(), "target": ident(p.target),
              "baseline": ident(p.baseline) if p.baseline else None,
              "data": shown(p.data, p.workspace) if p.data is not None else None,
              "records": len(records),
              "generated": p.generates and bool(records), "pairs": p.pairs, "task": p.task,
              **({"rewards": p.rewards.as_dicts()} if p.rewarded else {}),
              "settings": {**settings.to_dict(), "template": p.template, "system": p.system,
                           "max_length": p.max_length, "batch_size": batch_size, "dtype": dtype},
              "summary": {"data": held_out_summary(p, len(records)) if p.data is not None else None,
                          **{side: results[side]["summary"] for side in sides}}, "checkpoints": curve,
              **({"bench": bench_compare(p.bench, bench_scores, clock.seconds)} if p.bench is not None else {}),
              **({"no_data": p.no_data} if p.no_data else {}),
              "seconds": round(time.time() - t0, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(prefix=f".{out.name}.partial-", dir=out.parent)
    try:
        write_report(tmp, report, records)
        fix_modes(tmp)
        publish_dir(tmp, out)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, report


def held_out_summary(p: EvalPlan, evaluated: int) -> dict:
    """The report summary's data entry: the file (relative to the workspace), its records, why it."""
    held = p.held or HeldOut(p.data, "given", records=evaluated)
    return {**held.as_dict(p.workspace), "evaluated": evaluated}


def _checkpoint_losses(p: EvalPlan, models: _Models, encoded, pad, tell, cancelled, say) -> list[dict]:
    """The held-out loss of each checkpoint: adapters on the loaded base, full weights loaded each."""
    from tuitune.eval.loss import mean_loss, record_losses
    from tuitune.sources import is_adapter_dir

    curve = []
    for k, (step, path) in enumerate(p.checkpoints):
        say(f"checkpoint {step}: held-out loss")
        if is_adapter_dir(path) and can_share_base([p.target.adapter or path, path]):
            if models.loaded is None or not models.loaded.is_peft:
                models.free()
                models.loaded = load_model(p.target.base, {"target": p.target.adapter or path}, dtype=models.dtype,
                                           trust_remote_code=p.target.trust_remote_code, progress=say)
            model, name = models.loaded.model, f"step{step}"
            model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            losses = record_losses(model, encoded, pad_id=pad, prepare=adapter_selector(model, True, name), cancelled=cancelled)
            model.set_adapter(next(iter(models.loaded.adapters)))
            model.delete_adapter(name)
        elif is_adapter_dir(path):  # an adapter that cannot share the loaded base: on a base of its own
            models.free()
            models.loaded = load_model(p.target.base, {"target": path}, dtype=models.dtype,
                                       trust_remote_code=p.target.trust_remote_code, progress=say)
            losses = record_losses(models.loaded.model, encoded, pad_id=pad,
                                   prepare=adapter_selector(models.loaded.model, True, "target"), cancelled=cancelled)
        else:
            models.free()
            models.loaded = load_model(str(path), {}, dtype=models.dtype, progress=say)
            losses = record_losses(models.loaded.model, encoded, pad_id=pad, cancelled=cancelled)
        curve.append({"step": step, "loss": mean_loss(losses)})
        tell("checkpoints", k + 1, len(p.checkpoints))
    return curve


__all__ = ["EvalPlan", "plan", "evaluate", "default_output"]
