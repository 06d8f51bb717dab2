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

Also the probe's verdict as data (:class:`RungResult`, :class:`ProbeResult`, whose ``lines()`` a
terminal or a screen shows) and the run's ETA from a rung's measurements (:func:`eta`).
Standard library only: the CLI and the worker's failure path import it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

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
        return ", ".join(f"{k}: {json.dumps(v)}" for k, v in self.changes.items())  # true, not True


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
    return peak_rss(), "RSS"


def peak_rss() -> float:
    """This process's peak resident set in bytes: Linux's ``VmHWM``, else ``ru_maxrss`` (bytes on macOS).

    Not ``ru_maxrss`` on Linux: it is carried over from the parent across fork + exec, so a probe or run
    started from a 3 GiB process read 3 GiB whatever it did (every rung of a ladder the same)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(int(line.split()[1]) * 1024)
    except OSError:
        pass
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024))


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


# --- the probe's verdict -----------------------------------------------------------------------

def shown(path: Path) -> str:
    """A path as the user would type it from here: relative where it is under the current folder."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def gib_text(n: float | None) -> str:
    return "?" if n is None else f"{n / GIB:.2f} GiB"


def duration(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    h, rest = divmod(s, 3600)
    return (f"{h}h {rest // 60:02d}m" if h else f"{rest // 60}m {rest % 60:02d}s") if s >= 60 else f"{s}s"


def eta(cfg, m: dict) -> tuple[float | None, str]:
    """The whole run's time from a rung's measurements: start + steps x step + saves + evaluation rounds."""
    if m.get("sec_per_step") is None or not m.get("total_steps"):
        return None, ""
    steps, every = m["total_steps"], cfg.evaluation.every
    saves = steps // cfg.training.save_steps + 1                       # the checkpoints and the final save
    evals = steps // every if m.get("has_eval") else 0                 # eval loss on data.eval
    samples = ((steps - 1) // every + 2) if cfg.evaluation.prompts else 0  # the answers: before, during, after
    parts = [(m.get("start_s") or 0.0, f"start {duration(m.get('start_s'))}"),
             (steps * m["sec_per_step"], f"{steps} steps × {m['sec_per_step']:.2f} s"),
             (saves * (m.get("save_s") or 0.0), f"{saves} save{'s' if saves > 1 else ''} × {m.get('save_s') or 0:.2f} s")]
    if evals:
        parts.append((evals * (m.get("eval_s") or 0.0), f"{evals} eval-loss rounds × {m.get('eval_s') or 0:.2f} s"))
    if samples:
        parts.append((samples * (m.get("sample_s") or 0.0), f"{samples} sample rounds × {m.get('sample_s') or 0:.2f} s"))
    return sum(p for p, _ in parts), " + ".join(words for _, words in parts)


@dataclass
class RungResult:
    """One probed configuration: the ladder's changes so far, what was measured, the verdict."""

    label: str
    changes: dict
    fits: bool | None
    peak: float | None           # bytes: max RSS on a CPU, the largest GPU's max reserved on GPUs
    reason: str
    measured: dict = field(default_factory=dict)
    eta_s: float | None = None
    eta_words: str = ""
    skipped: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProbeResult:
    """What ``probe_config`` found; ``lines()`` is the text for a terminal or a screen."""

    config: str
    folder: Path
    device: str                  # "CPU" or "GPU"
    limit: float                 # bytes a rung may peak at
    limit_from: str
    settings: dict
    hardware: dict
    rungs: list[RungResult]
    estimate: float | None       # bytes: the estimator's figure for the config as it is
    estimate_of: str
    diff: list = field(default_factory=list)
    written: Path | None = None

    @property
    def fits(self) -> bool:
        return bool(self.rungs and self.rungs[0].fits)

    @property
    def chosen(self) -> RungResult | None:
        return next((r for r in self.rungs[1:] if r.fits), None)

    def to_dict(self) -> dict:
        first = self.rungs[0] if self.rungs else None
        err = (self.estimate - first.peak) / first.peak if self.estimate and first and first.peak else None
        return {"config": self.config, "device": self.device, "limit": self.limit, "limit_from": self.limit_from,
                "settings": self.settings, "hardware": self.hardware, "fits": self.fits,
                "estimate": {"bytes": self.estimate, "of": self.estimate_of, "error": err},
                "rungs": [r.to_dict() for r in self.rungs],
                "chosen": self.chosen.changes if self.chosen else None,
                "diff": [list(d) for d in self.diff], "written": str(self.written) if self.written else None}

    def lines(self) -> list[str]:
        first, hw = self.rungs[0], self.hardware
        m = first.measured
        box = f"{hw['cores']} cores, {hw['ram_gib']:.1f} GiB RAM" if self.device == "CPU" else \
            ", ".join(f"{g['name']} {g['total_gib']:.0f} GiB" for g in hw["gpus"])
        what = "peak RSS" if self.device == "CPU" else "peak GPU memory (reserved)"
        rows = m.get("longest_batch") or []
        batch = f"{len(rows)} rows, {sum(rows):,} tokens, the longest {max(rows)}" if rows else "?"
        out = [f"probe of {self.config} on {self.device} ({box}): {self.settings['warmup']} warm-up + "
               f"{self.settings['steps']} timed steps on the longest batch ({batch})",
               f"  {what} {gib_text(first.peak)} of {gib_text(self.limit)} ({self.limit_from}): {first.reason}"]
        if m.get("sec_per_step") is not None:
            said = {"tokens_per_s": "{:,.0f} tokens/s", "save_s": "one save {:.2f} s"}
            bits = [f"step {m['sec_per_step']:.2f} s"] + [w.format(m[k]) for k, w in said.items() if m.get(k)]
            rounds = {"eval_s": "eval loss {:.2f} s", "sample_s": "sample answers {:.2f} s"}
            ev = [w.format(m[k]) for k, w in rounds.items() if m.get(k) is not None]
            out.append("  " + "; ".join(bits + ([f"one evaluation round: {', '.join(ev)}"] if ev else [])))
            out.append(f"  ETA of the whole run: {first.eta_words} = {duration(first.eta_s)}")
        if self.estimate is not None and first.peak:
            err = (self.estimate - first.peak) / first.peak
            out.append(f"  estimate {gib_text(self.estimate)} ({self.estimate_of}) beside the measured "
                       f"{gib_text(first.peak)}: {abs(err):.0%} {'high' if err > 0 else 'low'}")
        if first.fits:
            out.append(f"verdict: fits, {gib_text(self.limit - first.peak)} headroom; the run takes about "
                       f"{duration(first.eta_s)}")
        else:
            out += self._ladder_lines()
        written = f" and {shown(self.written)}" if self.written else ""
        out.append(f"wrote {shown(self.folder / 'probe.json')}{written}")
        return out

    def _ladder_lines(self) -> list[str]:
        out = ["ladder (each rung adds to the ones before):"]
        for i, r in enumerate(self.rungs[1:], 1):
            out.append(f"  {i}. {r.label}: " + (f"skipped: {r.skipped}" if r.skipped else
                                                 f"peak {gib_text(r.peak)}: {r.reason}"))
        chosen = self.chosen
        if chosen is None:
            return out + ["verdict: does not fit, and no rung of the ladder fits here; use a smaller model, "
                          "or a machine with more memory"]
        out.append("first that fits, as a change to the config:")
        out += [f"  {k}: {json.dumps(old)} -> {json.dumps(new)}" for k, old, new in self.diff]
        if chosen.measured.get("truncated"):
            t = chosen.measured["truncated"]
            out.append(f"  ({t['cut']} of {t['records']} training records are longer than {t['max_length']} tokens "
                       "and get cut)")
        out.append(f"  ETA with it: {chosen.eta_words} = {duration(chosen.eta_s)}")
        tail = "" if self.written else " (--write FILE saves it as a new config)"
        return out + [f"verdict: does not fit as it is; with the change above it does{tail}"]
