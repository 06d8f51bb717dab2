"""The ladder: changes that make a run fit in less memory, in the order that keeps what is learned
the same where possible, and the one line a run that ran out of memory ends with.

Rungs, each added to the ones before (``tuitune train CONFIG --probe`` probes them in turn until one
fits; a run that ran out of memory names the next one as its fix):

1. gradient checkpointing on: the same training, ~30% slower;
2. batch halved with ``grad_accum`` doubled (again, down to 1): the same global batch, the same samples
   per step;
3. a paged 8-bit optimizer (bitsandbytes' ``paged_adamw_8bit``): GPU only;
4. ``max_length`` halved (again, down to 64): longer records are cut, the probe says how many;
5. ``qlora`` for ``lora``: the base held in 4 bits; GPU only.

Standard library only: the CLI and the worker's failure path import it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

#: How a run's error line that ran out of memory starts (the probe reads a rung's outcome by it).
OOM_PREFIX = "out of memory"
#: The shortest ``max_length`` the ladder cuts to.
MIN_LENGTH = 64
GIB = float(1 << 30)


@dataclass
class Rung:
    """One change to a config: its words, the fields it sets, whether a stopped run resumes with it."""

    label: str
    changes: dict = field(default_factory=dict)   # dotted field -> value
    resumable: bool = True
    skipped: str = ""                              # why it is not tried on this machine ("" = tried)

    def yaml(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in self.changes.items())


def _get(cfg, dotted: str):
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def apply(cfg, changes: dict):
    """A copy of ``cfg`` with ``changes`` ({"training.batch_size": 2}) set, validated as the form does."""
    new = cfg.model_copy(deep=True)
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        obj = new
        for part in path:
            obj = getattr(obj, part)
        setattr(obj, last, value)
    return new.with_context(workspace=cfg.workspace)


def rungs(cfg, cuda: bool) -> list[Rung]:
    """The ladder for ``cfg`` on this machine (``cuda``: a GPU is there), each rung holding its own change
    only; a rung that cannot apply (checkpointing already on, batch 1) is left out, one that needs a GPU
    is kept with ``skipped`` said."""
    t = cfg.training
    out: list[Rung] = []
    if not t.gradient_checkpointing:
        out.append(Rung("gradient checkpointing on", {"training.gradient_checkpointing": True}))
    batch, accum = t.batch_size, t.grad_accum
    while batch > 1:  # an odd batch goes to 1 at once: the global batch stays the same
        batch, accum = (batch // 2, accum * 2) if batch % 2 == 0 else (1, accum * batch)
        out.append(Rung(f"batch {batch} with grad_accum {accum} (the same global batch)",
                        {"training.batch_size": batch, "training.grad_accum": accum}))
    if "8bit" not in t.optimizer:
        out.append(Rung("a paged 8-bit optimizer", {"training.optimizer": "paged_adamw_8bit"}, resumable=False,
                        skipped="" if cuda else "needs a GPU (bitsandbytes' paged optimizers page GPU memory)"))
    length = cfg.data.max_length // 2
    while length >= MIN_LENGTH:
        out.append(Rung(f"max_length {length}", {"data.max_length": length}))
        length //= 2
    if cfg.method == "lora":
        out.append(Rung("qlora for lora (the base in 4 bits)", {"method": "qlora"}, resumable=False,
                        skipped="" if cuda else "needs a GPU (4-bit training here is GPU only)"))
    return out


def next_rung(cfg, cuda: bool) -> Rung | None:
    """The first rung of :func:`rungs` this machine can try, or None (nothing left to cut)."""
    return next((r for r in rungs(cfg, cuda) if not r.skipped), None)


def diff(before, after) -> list[tuple[str, object, object]]:
    """(field, old, new) for each setting that differs between two configs, in schema order."""
    from tuitune.config.schema import flatten

    a, b = flatten(before.model_dump(mode="json")), flatten(after.model_dump(mode="json"))
    return [(k, a.get(k), b[k]) for k in b if a.get(k) != b[k]]


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch running out of memory (CUDA's, or one the probe's cap raised)."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(exc, oom):
        return True
    return "CUDA out of memory" in str(exc)


def peak_memory() -> tuple[float, str]:
    """This process's peak memory in bytes and what it is: the GPU's allocated peak where training
    ran on one, else the peak resident set (RSS)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return float(max(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))), "GPU"
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale), "RSS"


#: Test-only: a run's worker raises torch.OutOfMemoryError when step N begins (CUDA's out-of-memory
#: cannot happen on a CPU box, so the tests of a run that runs out of memory set this).
SIMULATE_OOM_ENV = "TUITUNE_TEST_OOM_AT_STEP"


def SimulatedOOM(step: int):  # noqa: N802 - it stands for the callback class it builds
    """A Trainer callback that raises torch.OutOfMemoryError as step ``step`` begins (``SIMULATE_OOM_ENV``)."""
    from transformers import TrainerCallback

    class _Raise(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step + 1 == step:
                import torch

                raise torch.OutOfMemoryError(f"simulated by {SIMULATE_OOM_ENV}={step} (test only)")

    return _Raise()


def oom_line(run, cfg, step: int | None) -> str:
    """A run's one line when it ran out of memory: at which step, the peak, the ladder's next rung as the
    fix, and how to go on (``runs resume`` after setting it in the run's config, where the change allows)."""
    from tuitune.hardware import probe_hardware

    peak, what = peak_memory()
    at = f"at step {step}" if step else "before the first step"
    line = f"{OOM_PREFIX} {at} (peak {what} {peak / GIB:.2f} GiB)"
    rung = next_rung(cfg, probe_hardware().cuda) if cfg is not None else None
    if rung is None:
        return line + "; nothing left to cut on the ladder: use a smaller model or a machine with more memory"
    latest = run.latest_checkpoint()
    if rung.resumable and latest is not None:
        how = (f"set it in {run.config_path} and `tuitune runs resume {run.id}` continues from {latest.name} "
               "(it is intact)")
    else:
        why = "no checkpoint was saved" if latest is None else "the saved optimizer state does not carry over"
        how = f"start a new run with it ({why}); `tuitune train CONFIG --probe` finds the first change that fits"
    return f"{line}; next: {rung.label} ({rung.yaml()}): {how}"
