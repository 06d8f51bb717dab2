"""A run whose loss is NaN or inf: it stops, with one line saying where it went wrong and why, and its
checkpoints stay finite (``training.max_nonfinite_steps``).

The Trainer alone would train on: its ``logging_nan_inf_filter`` logs a NaN step as the mean of its window's
others (0.0 when every step of the window is NaN), so a diverged run looked as if it learned, and it saved
checkpoints of NaN weights over the good ones. ``NonFiniteGuard`` is driven by ``RunCallback``.
"""

from __future__ import annotations

import math

from tuitune.errors import TuituneError


class NonFiniteGuard:
    """Ends a run whose loss is NaN or inf ``training.max_nonfinite_steps`` logged steps in a row (0: never),
    and keeps its checkpoints finite: a save whose trainable weights hold a NaN or inf is skipped, so the
    newest checkpoint is the last with finite weights. From the first non-finite loss on, every step is
    logged, so the count is of steps. Driven by ``RunCallback`` (after its stop and save requests)."""

    def __init__(self, cfg):
        self.cfg = cfg  # its limit is read at the first non-finite loss
        self.count = 0
        self.first: int | None = None  # the step where it went wrong
        self.suspect: int | None = None  # the first of the steps with a finite loss but gradients that were not
        self.last_finite: tuple[int, float] | None = None
        self.logged = 0  # the step of the previous log

    @property
    def limit(self) -> int:
        """``training.max_nonfinite_steps``: non-finite logged losses in a row that end the run (0: never)."""
        return self.cfg.training.max_nonfinite_steps

    def begin(self, args, step: int) -> None:
        # The Trainer would log a NaN step as the mean of its window's others (0.0 when all are): the guard
        # and the user need the loss as it is. Evaluation keeps the filter (a batch without a label token
        # is NaN there, and dropped as before): it is on from a step that evaluates until the evaluation ends.
        args.logging_nan_inf_filter = False
        self.logged = step

    def evaluated(self, args) -> None:
        args.logging_nan_inf_filter = False

    def step_end(self, callback, args, control, model, step: int) -> None:
        args.logging_nan_inf_filter = bool(control.should_evaluate)
        if self.count:
            control.should_log = True
        if control.should_save and model is not None and callback.any_rank(not _finite_weights(model)):
            control.should_save = False
            callback.event(type="lifecycle", event="save_skipped", step=step,
                           reason="the weights hold NaN or inf; the newest checkpoint is the last finite one")

    def check(self, run, args, step: int, loss, grad_norm) -> None:
        """After a train log: count a non-finite loss; raise TuituneError (the run fails) at the limit."""
        window_start, self.logged = self.logged + 1, step
        if loss is not None and math.isfinite(loss):
            self.count, self.first, self.last_finite = 0, None, (step, loss)
            self.suspect = None if grad_norm is None or math.isfinite(grad_norm) else (self.suspect or step)
            return
        self.count += 1
        if self.first is None:
            self.first = self.suspect or window_start
            self.window = (window_start, step)  # a log of several steps: it went wrong in one of them
        if not self.limit or self.count < self.limit:
            return
        what = "nan" if loss is None or math.isnan(loss) else "inf"
        if self.suspect:
            start = f"the gradients were not finite at step {self.first} and the loss {what} after it"
        elif self.window[0] < self.window[1]:
            start = f"the loss went {what} in steps {self.window[0]}-{self.window[1]}"
        else:
            start = f"the loss went {what} at step {self.first}"
        before = (f" (the last finite loss {self.last_finite[1]:.4f} at step {self.last_finite[0]})"
                  if self.last_finite else "")
        latest = run.latest_checkpoint()
        kept = (f"kept {latest.name} (the newest with finite weights)" if latest is not None
                else "no checkpoint was saved before it")
        t, lora = self.cfg.training, self.cfg.lora
        scale = lora.alpha / lora.r if self.cfg.method != "full" else 0
        causes = [f"a learning rate too high (training.lr {t.lr:g}"
                  + (f"; LoRA scales its updates by alpha/r = {scale:g}" if scale > 4 else "") + ")"]
        if getattr(args, "fp16", False):
            causes.append("fp16 overflow (" + ("set training.precision: bf16, which this GPU has)" if _bf16_gpu()
                                                else "this GPU has no bf16: precision fp32, or a lower lr)"))
        again = (f" (`tuitune runs resume {run.id}` would go on from {latest.name} with the same lr)"
                 if latest is not None else "")
        raise TuituneError(
            f"{start}, {self.count} logged steps in a row{before}: stopped at step {step}, {kept}. Usual causes: "
            f"{'; '.join(causes)}; start a new run with a lower training.lr{again}")


def _finite_weights(model) -> bool:
    """Whether every trainable weight of ``model`` is finite (one check per tensor, one sync)."""
    import torch

    flags = [torch.isfinite(p).all() for p in model.parameters() if p.requires_grad and p.numel()]
    return bool(torch.stack(flags).all().item()) if flags else True


def _bf16_gpu() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
