"""``tuitune train CONFIG --probe``: measure a config on this box before the night starts.

Each probe rung is a child process started as a run's worker is (:func:`tuitune.config.to_launch_command`,
the launcher's environment) that runs :func:`tuitune.train.worker.run_worker` itself on a temporary run
folder, with :class:`ProbeHook`: the run's data, model and Trainer as ``build_trainer`` makes them, fed
the longest batch the data can make (the ``batch_size`` longest rows, again and again, in order) for
``warmup + steps`` optimizer steps; then the worker's own stop-and-checkpoint path saves once (timed)
and, where the config has ``data.eval``, one evaluation round runs (timed; the sample answers to the
evaluation prompts are timed by the run's callback before the first step). The child's peak memory is
its own (max RSS on a CPU, ``torch.cuda`` peaks per GPU), freed when it ends. The temporary folder goes;
``probes/<config>-<time>/probe.json`` stays. What does not fit walks :mod:`tuitune.train.ladder`.

The probe's copy of the config differs from the user's only where nothing is learned or held: no
notifications, no trackers, and no save or evaluation in the middle of the probe's few steps.
The engine call for a screen is :func:`probe_config`; its result's ``lines()`` is what to show.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tuitune.errors import TuituneError
from tuitune.train.ladder import (GIB, OOM_PREFIX, ProbeResult, Rung, RungResult, apply, diff, eta, gib_text, peak_memory,
                                   peak_rss, rungs)

WARMUP, STEPS = 2, 3
SPEC, RESULT = "probe-spec.json", "probe-result"


# --- in the child: the worker with a hook ---------------------------------------------------------

def _row_lengths(ds) -> list[int]:
    import pyarrow.compute as pc

    cols = [c for c in ("input_ids", "prompt_ids", "chosen_ids", "rejected_ids") if c in ds.column_names]
    out: list[int] = []
    for batch in ds.with_format("arrow").iter(batch_size=10_000):
        sums = None
        for c in cols:
            n = pc.list_value_length(batch[c])
            sums = n if sums is None else pc.add(sums, n)
        out += sums.to_pylist() if sums is not None else [0] * len(batch)
    return out


def total_steps(cfg, rows: int) -> int:
    """The optimizer steps of the whole run on ``rows`` training rows, as the Trainer counts them."""
    from tuitune.train.build import steps_per_epoch

    if cfg.training.max_steps:
        return cfg.training.max_steps
    if cfg.task == "grpo":  # a row is a prompt; the batch counts its completions
        rows *= cfg.grpo.num_generations
    return math.ceil(cfg.training.epochs * steps_per_epoch(rows, cfg))


class ProbeHook:
    """What the worker does differently for a probe: the callback that measures and stops, and the
    longest batch as the training data (``prepare``)."""

    def __init__(self, run, spec: dict):
        from transformers import TrainerCallback

        hook = self
        self.run, self.spec = run, spec
        self.n = spec["warmup"] + spec["steps"]
        self.ends: dict[int, float] = {}
        self.begins: dict[int, float] = {}
        self.tokens: dict[int, int] = {}
        self.marks: dict[str, float] = {}
        self.facts: dict = {}
        self.has_eval = False

        class Measure(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                hook.marks["train_begin"] = time.time()
                hook.check_cap("loading")

            def on_step_begin(self, args, state, control, **kw):
                hook.begins[state.global_step + 1] = time.time()

            def on_optimizer_step(self, args, state, control, **kw):  # the step's peak is behind it
                hook.check_cap(f"step {state.global_step + 1}")

            def on_step_end(self, args, state, control, **kw):
                step = state.global_step
                hook.ends[step] = time.time()
                hook.tokens[step] = getattr(state, "num_input_tokens_seen", 0) or 0
                if step >= hook.n:
                    hook.marks["last_step"] = time.time()
                    hook.run.request("stop")  # the run's own stop: it checkpoints (timed) and ends
                    control.should_evaluate = hook.has_eval

            def on_evaluate(self, args, state, control, **kw):
                hook.marks["evaluated"] = time.time()

            def on_save(self, args, state, control, **kw):
                hook.marks["saved"] = time.time()
                hook.check_cap("saving")

        self.callbacks = [Measure()]

    def check_cap(self, where: str) -> None:
        """Over the cap (``--max-memory``, or what the box had free): the OutOfMemoryError CUDA would raise."""
        cap = self.spec.get("cap")
        peak, what = peak_memory()
        if cap and what == "RSS" and peak > cap:
            import torch

            raise torch.OutOfMemoryError(f"peak RSS {peak / GIB:.2f} GiB over the cap {cap / GIB:.2f} GiB ({where})")

    def prepare(self, trainer, cfg, log) -> None:
        """Count the run's steps, then train on the ``batch_size`` longest rows, in order, ``warmup + steps``
        times over (every micro batch is the longest one the data makes)."""
        ds = trainer.train_dataset
        lengths = _row_lengths(ds)
        b, ga, world = cfg.training.batch_size, cfg.training.grad_accum, cfg.distributed.gpus * cfg.distributed.nnodes
        top = sorted(range(len(lengths)), key=lambda i: -lengths[i])[:b]
        self.has_eval = trainer.eval_dataset is not None
        self.facts.update(rows=len(lengths), total_steps=total_steps(cfg, len(lengths)),
                          longest_batch=[lengths[i] for i in top], has_eval=self.has_eval)
        if self.spec.get("count_cut_from"):
            self.facts["truncated"] = self.truncated(cfg, trainer.processing_class, log)
        trainer.train_dataset = ds.select(top * (ga * world * (self.n + 1)))
        if cfg.task != "grpo":  # GRPO's own sampler repeats each prompt for its completions
            trainer.args.train_sampling_strategy = "sequential"
        trainer.args.max_steps = self.n + 1
        log(f"probe: {self.spec['warmup']} warm-up + {self.spec['steps']} timed steps on the longest batch "
            f"({'+'.join(map(str, self.facts['longest_batch']))} tokens)")

    def truncated(self, cfg, tokenizer, log) -> dict:
        """How many training records are longer than this rung's ``max_length`` (read at the config's own)."""
        from tuitune.train.build import dataset_builder

        cut, full = cfg.data.max_length, self.spec["count_cut_from"]
        wide = apply(cfg, {"data.max_length": full})
        build = dataset_builder(wide, tokenizer, log=log)
        lengths = [n for src in wide.data.sources() for n in _row_lengths(build(wide.resolve(src.path), False))]
        return {"records": len(lengths), "cut": sum(n > cut for n in lengths), "max_length": cut, "from": full}

    def result(self) -> dict:
        """The measurements (this process's; rank R's on several GPUs)."""
        import torch

        st = self.run.read_state()
        w, n = self.spec["warmup"], self.n
        out: dict = {**self.facts, "status": st.get("status"), "error": st.get("error"),
                     "oom": str(st.get("error") or "").startswith(OOM_PREFIX), "marks": self.marks,
                     "torch": torch.__version__, "threads": torch.get_num_threads()}
        out["peak_rss"] = peak_rss()
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # this rank's GPU
            i = torch.cuda.current_device()
            out["gpus"] = [{"index": i, "name": torch.cuda.get_device_name(i),
                            "allocated": torch.cuda.max_memory_allocated(i), "reserved": torch.cuda.max_memory_reserved(i),
                            "total": torch.cuda.get_device_properties(i).total_memory}]
        if n in self.ends and (w + 1) in self.begins:
            secs = self.ends[n] - self.begins[w + 1]
            out["sec_per_step"] = secs / (n - w)
            toks = self.tokens.get(n, 0) - self.tokens.get(w, 0)
            out["tokens_per_s"] = toks / secs if toks and secs > 0 else None
        last = self.marks.get("last_step")
        if last and "evaluated" in self.marks:
            out["eval_s"] = self.marks["evaluated"] - last
        if "saved" in self.marks:
            out["save_s"] = self.marks["saved"] - self.marks.get("evaluated", last or self.marks["saved"])
        samples = [e for e in self.run.iter_events() if e.get("type") == "sample"]
        if samples:
            out["sample_s"] = samples[0].get("seconds")
        return out


def child_main(run_dir: str) -> int:
    """``python -m tuitune.train.probe RUN_DIR``: one rung, by the worker, its measurements beside it."""
    from tuitune.train.runfolder import RunFolder
    from tuitune.train.worker import run_worker

    run = RunFolder(Path(run_dir))
    spec = json.loads((run.path / SPEC).read_text())
    if spec.get("gpu_cap"):  # a cap on a GPU: CUDA itself says out of memory there
        import torch

        for i in range(torch.cuda.device_count()):
            torch.cuda.set_per_process_memory_fraction(min(1.0, spec["gpu_cap"] / torch.cuda.get_device_properties(i).total_memory), i)
    hook = ProbeHook(run, spec)
    code = run_worker(str(run.path), probe=hook)
    rank = os.environ.get("RANK", "0")
    (run.path / f"{RESULT}-{rank}.json").write_text(json.dumps({**hook.result(), "exit": code}))
    return 0


# --- in the CLI: the rungs, the verdict ------------------------------------------------------------

def parse_memory(text: str | None) -> int | None:
    """``--max-memory SIZE`` in bytes (2GB, 1.5GiB, 800MB), or None."""
    if text is None:
        return None
    from tuitune.units import parse_size

    try:
        return parse_size(text)
    except TuituneError:
        raise TuituneError(f"--max-memory {text!r}: write a size such as 800MB, 2GB or 1.5GiB",
                           field="max_memory") from None


def box_memory() -> int:
    """Bytes this box can still give a process: free RAM, or a container's limit less its use."""
    import psutil

    free = psutil.virtual_memory().available
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


def hardware() -> dict:
    """What the probe ran on: CPU, cores, RAM, GPUs."""
    import psutil

    from tuitune.cores import cpu_cores
    from tuitune.gpus import gpu_inventory
    from tuitune.hardware import cpu_model

    return {"cpu": cpu_model(), "cores": cpu_cores(), "ram_gib": round(psutil.virtual_memory().total / GIB, 2),
            "gpus": [g.to_dict() for g in gpu_inventory()]}


def checked_config(config_path, workspace):
    """The config, or the config check's first error as one line (as ``tuitune train`` refuses it)."""
    from tuitune.config import ERROR, check_config, load_config

    cfg = load_config(config_path, workspace=workspace)
    problems = [i for i in check_config(cfg) if i.level == ERROR]
    if problems:
        more = f" (and {len(problems) - 1} more: `tuitune config check {config_path}`)" if len(problems) > 1 else ""
        raise TuituneError(problems[0].format(config_path) + more)
    return cfg


def refuse_beside_live_run(workspace, device: str) -> None:
    from tuitune.train.runfolder import LIVE, list_runs

    for run in list_runs(workspace):
        status = run.status().get("status")
        if status in LIVE:
            raise TuituneError(f"run {run.id} is {status} in this workspace and holds the {device}: a probe beside it "
                               f"measures less than the box has and slows it; wait for it, stop it (`tuitune runs stop "
                               f"{run.id}`), or add --force to probe anyway")


def probe_copy(cfg):
    """The config the probe's worker runs: the user's, without notifications, trackers, or a save or an
    evaluation in the middle of its few steps (the probe saves and evaluates once, timed, at the end)."""
    return apply(cfg, {"notify.urls": [], "training.report_to": [], "training.save_steps": 10 ** 9,
                       "evaluation.every": 10 ** 9})


def _wait(proc, cancel) -> int:
    """The child's exit code; ``cancel`` (a threading.Event: a screen's Cancel) set, or the caller
    interrupted (ctrl+c): the child and its own children end (killed: a probe keeps nothing) and
    the probe ends with "cancelled"."""
    import psutil

    try:
        while True:
            try:
                return proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    raise TuituneError("the probe was cancelled: nothing was kept") from None
    finally:
        if proc.poll() is None:
            try:
                family = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                family = []
            for p in family:  # torch.distributed.run's ranks on several GPUs
                try:
                    p.kill()
                except psutil.Error:
                    pass
            proc.kill()
            proc.wait()


def run_rung(cfg, workspace: Path, tmp: Path, spec: dict, cancel=None) -> dict:
    """Probe ``cfg`` in a child started as a worker is; its measurements, its folder removed."""
    from tuitune.config import save_config, to_launch_command
    from tuitune.train.launcher import worker_env
    from tuitune.train.runfolder import RunFolder

    run = RunFolder(tmp / "run")
    try:
        run.path.mkdir(parents=True)
        save_config(probe_copy(cfg), run.config_path)
        run.write_state(status="starting", workspace=str(workspace), created=time.time(), name="probe")
        (run.path / SPEC).write_text(json.dumps(spec))
        cmd = to_launch_command(cfg, ["-m", "tuitune.train.probe", str(run.path)])
        t0 = time.time()
        with open(tmp / "probe.log", "wb") as log:
            proc = subprocess.Popen(cmd, cwd=workspace, env=worker_env(), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT)
            proc.returncode = _wait(proc, cancel)
        found = sorted(run.path.glob(f"{RESULT}-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        if not found:  # killed (the kernel's OOM killer on a CPU box) or broken before it could say
            tail = (tmp / "probe.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            return {"status": "failed", "oom": proc.returncode in (-9, 137), "exit": proc.returncode,
                    "error": f"the probe's process ended with {proc.returncode}: {tail[0][:300]}"}
        results = [json.loads(p.read_text()) for p in found]
        m = results[0]
        m["gpus"] = [g for r in results for g in r.get("gpus", [])]
        if m.get("marks", {}).get("train_begin"):
            m["start_s"] = m["marks"]["train_begin"] - t0
        return m
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verdict(m: dict, limit: float, gpu: bool) -> tuple[bool, float | None, str]:
    peak = max((g["reserved"] for g in m.get("gpus") or []), default=None) if gpu else m.get("peak_rss")
    if m.get("oom"):
        said = (m.get("error") or "out of memory").split("; next:")[0]  # the run's line names the next rung: this is it
        return False, peak, f"does not fit ({said})"
    if m.get("status") != "stopped":
        raise TuituneError(f"the probe could not train this config: {m.get('error') or 'no result'}")
    if peak is not None and peak > limit:
        return False, peak, f"does not fit ({gib_text(peak - limit)} over)"
    return True, peak, f"fits, {gib_text(limit - (peak or 0))} headroom"


def probe_config(config_path, workspace, *, warmup: int = WARMUP, steps: int = STEPS, max_memory: int | None = None,
                 force: bool = False, write: str | Path | None = None, log=lambda line: None,
                 cancel=None) -> ProbeResult:
    """Probe a config on this box (see the module docstring), walk the ladder where it does not fit, and
    leave ``probes/<config>-<time>/probe.json``; ``write``: save the first rung that fits as a new config.
    ``cancel``: a ``threading.Event`` that, set, ends the probe's child and the probe (a screen's Cancel)."""
    from tuitune.fsutil import refuse_existing, slug
    from tuitune.hardware import probe_hardware

    workspace = Path(workspace).resolve()
    cfg = checked_config(config_path, workspace)
    gpu = probe_hardware().cuda
    device = "GPU" if gpu else "CPU"
    if not force:
        refuse_beside_live_run(workspace, device)
    if write is not None:
        refuse_existing(write, force)
    hw = hardware()
    if gpu:
        total = min(g["total_gib"] for g in hw["gpus"]) * GIB
        limit, limit_from = (max_memory, "--max-memory") if max_memory and max_memory < total else (total, "the GPU's memory")
    else:
        free = box_memory()
        limit, limit_from = (max_memory, "--max-memory") if max_memory and max_memory < free else (free, "free RAM")
    folder = workspace / "probes" / f"{slug(Path(config_path).stem)}-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 2
    while folder.exists():
        folder, n = folder.with_name(f"{folder.name.rsplit('~', 1)[0]}~{n}"), n + 1
    folder.mkdir(parents=True)
    spec = {"warmup": warmup, "steps": steps, "gpu": gpu, "max_memory": max_memory, "limit": limit,
            "limit_from": limit_from, "cap": None if gpu else limit, "gpu_cap": max_memory if gpu else None}
    try:
        return _walk(cfg, config_path, workspace, folder, spec, hw, write=write, force=force, log=log, cancel=cancel)
    except BaseException:
        if not (folder / "probe.json").exists():  # a probe that could not finish leaves nothing behind
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _walk(cfg, config_path, workspace: Path, folder: Path, spec: dict, hw: dict, *, write, force: bool,
          log, cancel=None) -> ProbeResult:
    """The rungs in turn until one fits; the result, its probe.json written (and ``write``'s config)."""
    from tuitune.config import save_config
    from tuitune.fsutil import atomic_write_json

    gpu, limit = spec["gpu"], spec["limit"]
    ladder = [Rung("the config as it is")] + rungs(cfg, gpu)
    results: list[RungResult] = []
    current = cfg
    for i, rung in enumerate(ladder):
        if rung.skipped:
            results.append(RungResult(rung.label, rung.changes, None, None, "", skipped=rung.skipped))
            continue
        current = apply(current, rung.changes)
        log(f"probing {rung.label} ...")
        cut = {"count_cut_from": cfg.data.max_length} if "data.max_length" in rung.changes else {}
        m = run_rung(current, workspace, folder / f".rung-{i}", {**spec, **cut}, cancel)
        fits, peak, reason = _verdict(m, limit, gpu)
        secs, words = eta(current, m)
        results.append(RungResult(rung.label, {k: v for k, _, v in diff(cfg, current)}, fits, peak, reason, m,
                                  secs, words))
        if fits:
            break
    longest = results[0].measured.get("longest_batch") or []
    est, est_of = _estimate(cfg, gpu, sum(longest) or None)
    settings = {"warmup": spec["warmup"], "steps": spec["steps"], "max_memory": spec["max_memory"],
                "config": cfg.model_dump(mode="json")}
    res = ProbeResult(str(config_path), folder, "GPU" if gpu else "CPU", limit, spec["limit_from"], settings, hw,
                      results, est, est_of)
    chosen = res.chosen
    if chosen is not None:
        res.diff = diff(cfg, apply(cfg, chosen.changes))
        if write is not None:  # --force keeps what FILE held beside it, as every verb does
            from tuitune.fsutil import kept_aside

            with kept_aside(write, force=force, note=log):
                res.written = save_config(apply(cfg, chosen.changes), write, force=force)
    atomic_write_json(folder / "probe.json", res.to_dict())
    return res


def _estimate(cfg, gpu: bool, tokens: int | None) -> tuple[float | None, str]:
    """The estimator's figure for ``cfg`` (tuitune.vram): GPU memory per GPU, or the CPU run's peak RSS."""
    try:
        if gpu:
            from tuitune.vram import estimate_for_config

            return estimate_for_config(cfg).total_gib * GIB, "tuitune.vram, per GPU"
        from tuitune.vram.cpu import estimate_rss

        return estimate_rss(cfg, tokens), "tuitune.vram.cpu, peak RSS"
    except TuituneError:
        return None, ""


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1]))
