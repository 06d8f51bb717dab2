"""Does an estimate fit the free GPU memory, and which changes would make it fit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from tuitune.errors import TuituneError
from tuitune.vram.estimate import Estimate, estimate

# --- advice -----------------------------------------------------------------------------


@dataclass
class Advice:
    fits: Optional[bool]
    message: str
    suggestions: list[str] = field(default_factory=list)
    #: The keyword changes behind each suggestion, in the same order (for a UI to apply).
    changes: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _gib(x: float) -> str:
    return f"{x:.1f} GiB"


def _fits(est: Estimate, free: list[float]) -> bool:
    if est.gpus > len(free):
        return False
    return est.total_gib <= min(free[:est.gpus])


def _describe(change: dict, est: Estimate) -> str:
    bits = []
    for k, v in change.items():
        if k == "gradient_checkpointing":
            bits.append("turn on gradient checkpointing")
        elif k == "batch_size":
            acc = max(1, est.batch_size // v)
            bits.append(f"batch size {v} with gradient accumulation x{acc}")
        elif k == "method":
            bits.append(f"use --method {v}")
        elif k == "max_length":
            bits.append(f"max length {v}")
        elif k == "deepspeed":
            gpus = change.get("gpus", est.gpus)
            label = {"zero2": "ZeRO-2", "zero3": "ZeRO-3", "zero2_offload": "ZeRO-2 offload",
                     "zero3_offload": "ZeRO-3 offload"}[v]
            bits.append(f"{gpus} GPUs with {label}" if gpus > 1 else label)
        elif k == "gpus" and "deepspeed" not in change:
            bits.append(f"use the {v} GPU{'s' if v > 1 else ''} here")
    return " + ".join(bits)


def _candidates(est: Estimate, n_free: int) -> list[tuple[int, dict]]:
    """Single changes with a cost: how much they slow training or change what is learned."""
    out: list[tuple[int, dict]] = []
    if not est.gradient_checkpointing:
        out.append((1, {"gradient_checkpointing": True}))  # ~30% slower, same result
    if est.batch_size > 1:
        out.append((1, {"batch_size": 1}))  # same result with gradient accumulation
    if n_free > 1:
        for cost, stage in ((2, "zero2"), (3, "zero3")):
            if est.deepspeed != stage or est.gpus != n_free:
                out.append((cost, {"gpus": n_free, "deepspeed": stage}))
    if est.method == "full":
        out.append((4, {"method": "lora"}))
        out.append((5, {"method": "qlora"}))
    elif est.method == "lora":
        out.append((4, {"method": "qlora"}))
    length, cost = est.max_length // 2, 3
    while length >= 256:  # each halving truncates more of the data
        out.append((cost, {"max_length": length}))
        length, cost = length // 2, cost + 3
    for cost, stage in ((6, "zero2_offload"), (7, "zero3_offload")):  # several times slower
        if est.deepspeed != stage:
            out.append((cost, {"deepspeed": stage, "gpus": n_free if n_free > 1 else est.gpus}))
    return out


def advise(est: Estimate, free_gib: list[float]) -> Advice:
    """Does ``est`` fit in the free memory of these GPUs, and if not, what would?

    ``free_gib`` lists each visible GPU's free memory (empty: no GPU). The run uses
    the first ``est.gpus`` of them. Every suggestion was re-estimated with
    :func:`estimate` and fits. Single changes and pairs of them are ranked by a
    cost (how much slower training gets or how much what is learned changes):
    gradient checkpointing 1, micro batch 1 with accumulation 1, the other GPUs
    with ZeRO-2/ZeRO-3 2/3, full -> LoRA 4, -> QLoRA 4 (5 from full), each
    halving of max length 3 more, CPU offload 6/7; a pair costs the sum.
    At most four suggestions, cheapest first.
    """
    free = [float(f) for f in (free_gib or [])]
    need = est.total_gib
    if not free:
        return Advice(None, f"no GPU here: needs {_gib(need)} on a GPU"
                            + (f" (x{est.gpus})" if est.gpus > 1 else ""))
    if est.gpus > len(free):
        msg = f"needs {est.gpus} GPUs with {_gib(need)} each, found {len(free)}: does not fit"
    else:
        used = free[:est.gpus]
        idx = used.index(min(used))
        ok = need <= used[idx]
        where = f"GPU {idx} has {_gib(used[idx])} free" if est.gpus == 1 else \
            f"the smallest of {est.gpus} GPUs (GPU {idx}) has {_gib(used[idx])} free"
        msg = f"needs {_gib(need)} per GPU, {where}: {'fits' if ok else 'does not fit'}"
        if ok:
            return Advice(True, msg)
    if est.model is None:
        return Advice(False, msg)

    base = est.settings()

    def verified(change: dict) -> Optional[Estimate]:
        try:
            new = estimate(est.model, **{**base, **change})
        except TuituneError:
            return None
        return new if _fits(new, free) else None

    singles = _candidates(est, len(free))
    if est.gpus > len(free):  # first of all, run on the GPUs that are here
        here = {"gpus": len(free)}
        singles = [(0, here)] + [(c, {**here, **ch}) for c, ch in singles if "gpus" not in ch] + \
                  [(c, ch) for c, ch in singles if "gpus" in ch]
    found: list[tuple[int, dict, Estimate]] = []
    alone = set()
    for k, (cost, change) in enumerate(singles):
        new = verified(change)
        if new is not None:
            found.append((cost, change, new))
            alone.add(k)
    for i, (ci, a) in enumerate(singles):
        for j in range(i + 1, len(singles)):
            cj, b = singles[j]
            if i in alone or j in alone or set(a) & set(b) - {"gpus"}:
                continue  # a pair is only worth it when neither half is enough on its own
            new = verified({**a, **b})
            if new is not None:
                found.append((ci + cj, {**a, **b}, new))
    # Drop a change that only adds to another change which fits already.
    found = [f for f in found if not any(g[1].items() < f[1].items() for g in found)]
    found.sort(key=lambda f: f[0])  # stable: singles before pairs of the same cost
    found = [(c, e) for _cost, c, e in found]
    found = found[:4]
    suggestions = [f"{_describe(c, est)} ({_gib(e.total_gib)})" for c, e in found]
    if not found:
        msg += "; no single or paired change makes it fit: use a smaller model or a bigger GPU"
    return Advice(False, msg, suggestions, [c for c, _ in found])
