"""Trainer callbacks that turn a run into events.jsonl + state.json, and obey control/.

Only the main process (rank 0) writes events; every rank takes part in generation so
that ZeRO-3, where each rank holds a shard of the weights, does not deadlock. On several
machines, each machine's first process also keeps its own run folder's state.json (status,
step) and reads its control/: a stop or save asked on any node is decided on every rank.
"""

from __future__ import annotations

import signal
import time

from transformers import TrainerCallback

from tuitune.train.nonfinite import NonFiniteGuard


EMA_ALPHA = 0.3  # weight of the newest interval in the smoothed seconds per step


def _float(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


#: What TRL's preference trainers log beside the loss, under the names the events use: the margin
#: of the chosen answer's implicit reward over the rejected one's, and how often it is above it.
PREFERENCE_LOGS = {"rewards/margins": "reward_margin", "rewards/accuracies": "reward_accuracy",
                   "rewards/chosen": "reward_chosen", "rewards/rejected": "reward_rejected"}


def _preference(logs: dict, prefix: str = "") -> dict:
    return {prefix + name: _float(logs[prefix + key]) for key, name in PREFERENCE_LOGS.items() if prefix + key in logs}


#: What TRL's GRPO trainer logs beside the loss, under the names the events use: the weighted reward's
#: mean and spread, the share of groups whose completions all scored the same (they teach nothing), the
#: completions' mean length, the KL to the reference (beta > 0) and the share of clipped tokens.
GRPO_LOGS = {"reward": "reward_mean", "reward_std": "reward_std", "frac_reward_zero_std": "reward_zero_std",
             "completions/mean_length": "completion_length", "kl": "kl", "clip_ratio/region_mean": "clip_ratio"}


def _grpo(logs: dict, prefix: str = "") -> dict:
    """GRPO's figures, and each reward function's mean and spread as ``reward_<name>_mean``/``_std``
    (TRL logs ``rewards/<name>/mean``, the name being the function's ``__name__``)."""
    out = {prefix + name: _float(logs[prefix + key]) for key, name in GRPO_LOGS.items() if prefix + key in logs}
    for key, value in logs.items():
        parts = key[len(prefix):].split("/") if key.startswith(prefix + "rewards/") else ()
        if len(parts) == 3 and parts[2] in ("mean", "std"):
            out[f"{prefix}reward_{parts[1]}_{parts[2]}"] = _float(value)
    return out


class RunCallback(TrainerCallback):
    """Events for every log, evaluation, checkpoint and lifecycle step; stop and save on request."""

    def __init__(self, run, cfg, tokenizer, *, is_main: bool, distributed: bool = False, zero3: bool = False,
                 node_main: bool | None = None, cores=None):
        self.run = run
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.is_main = is_main
        # node_main: the first process of its machine (rank 0 on node 0): state.json and control/.
        self.node_main = is_main if node_main is None else node_main
        self.distributed = distributed
        self.zero3 = zero3
        self.cores = cores  # this process's share of the CPU's cores (tuitune.cores.Share), or None
        self.t0 = None
        self.step0 = 0
        self.tokens0 = 0
        self.last_tokens = (None, None)  # (time, tokens) at the previous log
        # Time across resumes: training seconds of earlier sessions (from state.json), the
        # smoothed seconds per step, and the (time, step) the next interval is measured from.
        self.elapsed0 = 0.0
        self.sec_per_step = None
        self.mark = None
        self.stop_signal = False
        self.stopped_on_request = False
        self._prev_sigterm = None
        self.guard = NonFiniteGuard(cfg)

    # --- helpers -------------------------------------------------------------------------
    def event(self, **event) -> None:
        if self.is_main:
            self.run.append_event(event)

    def state(self, **changes) -> None:
        if self.node_main:
            self.run.write_state(**changes)

    def _sigterm(self, signum, frame):
        # A polite kill (SIGTERM from a scheduler, or ctrl+c in --foreground): checkpoint, then
        # exit. A second ctrl+c interrupts at once.
        self.stop_signal = True
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _requested(self, what: str) -> bool:
        """Whether ``what`` was requested (on any node); the same answer on every rank."""
        mine = self.run.take_request(what) if self.node_main else False
        if what == "stop":
            mine = mine or self.stop_signal
        return self.any_rank(mine)

    def any_rank(self, mine: bool) -> bool:
        """True on every rank when ``mine`` is true on any."""
        if not self.distributed:
            return mine
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1 if mine else 0], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    # --- samples -------------------------------------------------------------------------
    def sample_answers(self, model, step: int, when: str) -> None:
        """Answer the config's evaluation prompts greedily, by the path chat uses (tuitune.generation).

        So the answer logged at step N is the answer ``tuitune chat RUN:checkpoint-N --temperature 0``
        gives: the same template, system prompt, stop words and token budget.
        """
        prompts = self.cfg.evaluation.prompts
        if not prompts:
            return
        from tuitune.generation import GenerationSettings, answer, messages_for

        settings = GenerationSettings(temperature=0, max_new_tokens=self.cfg.evaluation.max_new_tokens,
                                      system=self.cfg.data.system or "")
        was_training = model.training
        model.eval()
        answers = []
        t = time.time()
        try:
            for prompt in prompts:
                # ZeRO-3: every rank must run the same forward passes to gather weights.
                gen = answer(model, self.tokenizer, settings, template=self.cfg.template,
                             messages=messages_for(prompt, settings.system), synced_gpus=self.zero3)
                answers.append({"prompt": prompt, "answer": gen.text.strip()})
        finally:
            if was_training:
                model.train()
        self.event(type="sample", step=step, when=when, answers=answers, seconds=round(time.time() - t, 3))

    # --- time ----------------------------------------------------------------------------
    def elapsed(self, now: float | None = None) -> float:
        """Training seconds over every session of this run (a resume continues the count)."""
        now = time.time() if now is None else now
        return self.elapsed0 + max(0.0, now - (self.t0 or now))

    def _rate(self, now: float, step: int) -> float | None:
        """Seconds per step, an EMA of the intervals between logs; the resume gap never counts."""
        if self.mark is not None:
            t_prev, s_prev = self.mark
            if step > s_prev and now > t_prev:
                dt = (now - t_prev) / (step - s_prev)
                self.sec_per_step = dt if self.sec_per_step is None else (
                    EMA_ALPHA * dt + (1 - EMA_ALPHA) * self.sec_per_step)
        self.mark = (now, step)
        return self.sec_per_step

    def _eta(self, step: int, max_steps: int) -> float | None:
        if self.sec_per_step is None:
            return None
        return round(self.sec_per_step * max(0, max_steps - step), 1)

    # --- the callback API ----------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kw):
        self.t0 = time.time()
        prev = self.run.read_state() if self.is_main else {}
        if state.global_step > 0:
            # Resumed: continue the earlier sessions' clock and rate (state.json is the one record).
            self.elapsed0 = float(prev.get("elapsed") or 0.0)
            self.sec_per_step = _float(prev.get("sec_per_step"))
        self.step0 = state.global_step
        self.tokens0 = getattr(state, "num_input_tokens_seen", 0) or 0
        self.last_tokens = (self.t0, self.tokens0)
        try:
            self._prev_sigterm = signal.signal(signal.SIGTERM, self._sigterm)
            signal.signal(signal.SIGINT, self._sigterm)
        except ValueError:  # not the main thread
            self._prev_sigterm = None
        self.guard.begin(args, state.global_step)
        self.state(status="running", step=state.global_step, total_steps=state.max_steps,
                   epochs=args.num_train_epochs)
        self.event(type="lifecycle", event="train_begin", step=state.global_step, total_steps=state.max_steps,
                   resumed=state.global_step > 0)
        if model is not None:
            self.sample_answers(model, state.global_step, "before")
        self.mark = (time.time(), state.global_step)  # measured from here: load and samples are no step

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        now = time.time()
        step = state.global_step
        if "eval_loss" in logs:
            self.event(type="eval", step=step, epoch=_float(state.epoch), eval_loss=_float(logs["eval_loss"]),
                       **_preference(logs, "eval_"), **_grpo(logs, "eval_"))
            self.state(last_eval_loss=_float(logs["eval_loss"]))
            return
        if "loss" not in logs:
            return
        tokens = getattr(state, "num_input_tokens_seen", 0) or 0
        t_prev, tok_prev = self.last_tokens
        tps = (tokens - tok_prev) / (now - t_prev) if tok_prev is not None and now > t_prev else None
        self.last_tokens = (now, tokens)
        elapsed = self.elapsed(now)
        rate = self._rate(now, step)
        eta = self._eta(step, state.max_steps)
        self.event(type="train", step=step, total_steps=state.max_steps, epoch=_float(state.epoch),
                   loss=_float(logs.get("loss")), lr=_float(logs.get("learning_rate")),
                   grad_norm=_float(logs.get("grad_norm")), tokens=tokens,
                   tokens_per_s=round(tps, 1) if tps is not None else None,
                   elapsed=round(elapsed, 2), eta=eta, **_preference(logs), **_grpo(logs))
        from tuitune.train.ladder import peak_memory

        peak, of = peak_memory()
        self.state(step=step, total_steps=state.max_steps, last_loss=_float(logs.get("loss")),
                   eta=eta, elapsed=round(elapsed, 2),
                   sec_per_step=round(rate, 4) if rate is not None else None, peak_memory=peak, peak_memory_of=of)
        self.guard.check(self.run, args, step, _float(logs.get("loss")), _float(logs.get("grad_norm")))

    def on_step_end(self, args, state, control, model=None, **kw):
        step = state.global_step
        if self.cores is not None and self.cores.rebalance() is not None:  # another process came or went
            self.state(threads=self.cores.threads)
        if self._requested("save"):
            control.should_save = True
            self.event(type="lifecycle", event="save_requested", step=step)
        if self._requested("stop"):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_on_request = True
            self.state(status="stopping")
            self.event(type="lifecycle", event="stop_requested", step=step)
        self.guard.step_end(self, args, control, model, step)
        every = self.cfg.evaluation.every
        if (model is not None and every and step % every == 0 and step < state.max_steps
                and not control.should_training_stop):
            self.sample_answers(model, step, "during")

    def on_evaluate(self, args, state, control, **kw):
        self.guard.evaluated(args)

    def on_save(self, args, state, control, **kw):
        path = f"{args.output_dir}/checkpoint-{state.global_step}"
        if self.is_main:
            from tuitune.fsutil import fix_modes

            fix_modes(path)  # safetensors and torch.save leave 0600 files; the umask's modes instead
        self.event(type="checkpoint", step=state.global_step, path=path)
        # The step goes with the checkpoint: a stop between two logs must not show an older step.
        # Another node's checkpoints/ holds only its RNG state: the checkpoint is node 0's.
        where = {"last_checkpoint": path} if self.is_main else {}
        self.state(step=state.global_step, elapsed=round(self.elapsed(), 2), **where)

    def on_train_end(self, args, state, control, model=None, **kw):
        self.state(step=state.global_step, elapsed=round(self.elapsed(), 2))
        if model is not None and not self.stopped_on_request:
            self.sample_answers(model, state.global_step, "after")
        if self._prev_sigterm is not None:
            signal.signal(signal.SIGTERM, self._prev_sigterm)
            signal.signal(signal.SIGINT, signal.default_int_handler)
