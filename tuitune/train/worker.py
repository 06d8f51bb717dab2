"""The training worker: ``python -m tuitune.train.worker RUN_DIR [--resume]``.

Started by the launcher in its own session (stdin /dev/null, output to train.log), or
by torchrun for several GPUs or machines. It owns the run folder while it runs (a lock file), writes
state.json and events.jsonl, and leaves either a final adapter/model (``finished``),
a checkpoint to resume from (``stopped``), or an error line (``failed``). On a machine other than
node 0, its run folder gets the status and lifecycle events only (the job's metrics and outputs
are node 0's).
Its last event is appended before the ended status is written, so a reader that sees
the status end and then drains events.jsonl has every event.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import sys
import time
import traceback
from pathlib import Path

from tuitune.cores import share_cores
from tuitune.errors import TuituneError
from tuitune.train.ladder import SIMULATE_OOM_ENV, SimulatedOOM, is_out_of_memory, oom_line
from tuitune.train.runfolder import RunFolder
from tuitune.train.tracking import use_trackers


def _rank() -> tuple[int, int, int]:
    """(global rank, world size, rank on this machine), as torchrun sets them."""
    env = os.environ
    return int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0"))


def acquire_lock(run: RunFolder):
    """Hold ``run/.lock`` for the worker's life; a second worker on the same folder is refused."""
    fh = open(run.lock_path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise TuituneError(f"{run.path}: another worker is training in this run folder; "
                           "follow it with `tuitune runs follow` or stop it first") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def disk_full(exc: BaseException, where: Path) -> bool:
    """Whether ``exc`` is a write that failed for lack of space.

    torch.save and safetensors wrap ENOSPC in their own errors, so look at the whole
    chain, the message, and the free space that is left.
    """
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == 28:
            return True
        text = str(seen)
        if "No space left" in text or "StorageFull" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    if "write" in str(exc).lower():
        try:
            return shutil.disk_usage(where).free < 64 * 1024 * 1024
        except OSError:
            return False
    return False


def save_final(trainer, tokenizer, run: RunFolder, adapter: bool, is_main: bool) -> Path:
    """Save the final adapter or model with its tokenizer; it appears only when complete."""
    target = run.adapter_dir if adapter else run.model_dir
    tmp = target.with_name(f".{target.name}.partial")
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))  # every rank: ZeRO-3 gathers the shards here
    if is_main:
        tokenizer.save_pretrained(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    return target


def reuse_freed_memory(cfg, hw=None) -> None:
    """From here on, let glibc keep the memory a training step frees, for the next step to reuse;
    where the run computes in fp32, or on a GPU box (not in bf16 on a CPU).

    Each step allocates and frees the same large tensors (activations, their recomputation
    under checkpointing, logits). With glibc's defaults, blocks above its mmap threshold (128 KB,
    rising to 32 MB) come from mmap and return to the kernel when freed, and the heap's top is
    trimmed past 128 KB, so every step faults in and zeroes fresh pages for what the last one
    freed (on a CPU run, a large share of the time goes to the kernel). Measured on
    SmolLM2-135M, LoRA r16, batch 16, length 128, fp32, checkpointing, 2 cores, worker peak RSS:
    glibc's defaults 216 tokens/s, 2.23 GB; every block over 1 MB mmapped 141 tokens/s, 1.43 GB
    (and 127 at the same settings before the padding-free batches); this 243 tokens/s, 2.17 GB.
    Again on the 2-core EPYC with AVX-512 bf16, smol-demo in fp32: 214 tokens/s, 2.24 GiB with it,
    198 and 2.34 GiB without.

    In bf16 on a CPU (issue 22) it costs memory and buys no speed: the worker grew ~17 MB a step
    to the end of the run (bf16 matmuls go through oneDNN, which allocates per shape; the kept heap
    did not give those blocks back). smol-demo (bf16, same box): with it 2.40-2.52 GiB at 256-280
    tokens/s; without it 2.12 GiB at 271 (some growth remains: 1.80 -> 2.08 GiB over 40 steps).
    bench/train.py --model real --group matched: peak RSS 2,442 -> 2,180-2,201 MB at 224 and 214
    tokens/s (the Trainer script: 2,113-2,304 MB). So a run whose matmuls are 16-bit on a CPU keeps
    glibc's defaults. Called once the model is loaded, so what loading freed has been handed back already
    (on a GPU box the host copies of the weights). Not glibc (macOS, musl): nothing to tune.
    """
    from tuitune.hardware import probe_hardware, resolve_precision

    hw = probe_hardware() if hw is None else hw  # ``hw``: what the machine is (tests), else this one
    if resolve_precision(cfg, hw) != "fp32" and not hw.cuda:
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except (OSError, AttributeError):
        return
    libc.malloc_trim(0)
    libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD: heap, not mmap, up to 256 MB a block
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GB of freed heap top


def run_worker(run_dir: str, resume: bool = False, probe=None) -> int:
    """Train the run in ``run_dir``; ``probe``: a ``tuitune.train.probe.ProbeHook`` (its callbacks measure,
    its ``prepare`` feeds the longest batch; ``tuitune train --probe`` runs this on a temporary folder)."""
    run = RunFolder(Path(run_dir))
    rank, world, local_rank = _rank()
    is_main = rank == 0
    # On several machines each has its own run folder; its first process (node 0's is rank 0) keeps
    # that folder's lock, status and lifecycle events. The metrics and outputs are rank 0's alone.
    keeps_folder = local_rank == 0
    lock = acquire_lock(run) if keeps_folder else None
    state = run.read_state()
    if keeps_folder:
        run.write_state(status="starting", host=socket.gethostname(),
                        worker_pid=os.getpid(), world_size=world, error=None)
        run.append_event({"type": "lifecycle", "event": "worker_start", "pid": os.getpid(), "resume": resume,
                           "world_size": world, **({"rank": rank} if rank else {})})
    stopped = False
    notifier = watch = trainer = cfg = None  # notify: and the stall watchdog (tuitune.train.watchdog), once the config is read
    try:
        log = (lambda msg: print(msg, flush=True)) if keeps_folder else (lambda msg: None)
        # Before torch's thread pools start: this run's share of the CPU beside other tuitune processes
        # (none of this on a GPU box); looked at again between steps (RunCallback).
        cores = share_cores(f"run {run.id}" + (f" rank {rank}" if world > 1 else ""), workspace=state.get("workspace"),
                            log=log)
        if cores is not None and keeps_folder:
            run.write_state(threads=cores.threads)
        from tuitune.config import load_config

        cfg = load_config(run.config_path, workspace=state.get("workspace"))
        from tuitune.hardware import keep_bitsandbytes_out, keep_deepspeed_out, needs_bitsandbytes

        if not needs_bitsandbytes(cfg):
            # peft imports bitsandbytes where it is installed; unquantized, it is only import
            # time (1.1 s of the worker's 6, with torch's compiler it pulls in), memory and (on CPUs
            # with AVX-512 bf16) a warning in train.log. Before anything imports peft: the
            # watchdog's TrainerCallback does (transformers.trainer_utils -> peft).
            keep_bitsandbytes_out()
        if cfg.distributed.deepspeed == "none":
            keep_deepspeed_out()
        from tuitune.notify import keep_telemetry_off
        from tuitune.train.watchdog import RunNotifier, Watchdog

        notifier = RunNotifier(run, cfg, log, enabled=is_main)
        log(notifier.describe(keep_telemetry_off(notifier.settings)))  # before any trainer could ping the hub
        use_trackers(cfg.training.report_to, run, log)
        from tuitune.train.build import build_trainer
        from tuitune.train.callbacks import RunCallback

        trainer, tokenizer = build_trainer(cfg, run, log=log, callbacks=probe.callbacks if probe else ())
        if probe is not None:
            probe.prepare(trainer, cfg, log)
        elif os.environ.get(SIMULATE_OOM_ENV):
            trainer.add_callback(SimulatedOOM(int(os.environ[SIMULATE_OOM_ENV])))
        cb = RunCallback(run, cfg, tokenizer, is_main=is_main, distributed=world > 1,
                         zero3=cfg.distributed.deepspeed.startswith("zero3"), node_main=keeps_folder, cores=cores)
        trainer.add_callback(cb)
        if keeps_folder:
            watch = Watchdog(run, notifier if is_main else None, notifier.settings.stall_seconds)
            trainer.add_callback(watch)
        checkpoint = None
        if resume:
            cps = run.list_checkpoints()
            if not cps:
                raise TuituneError(f"{run.path}: no complete checkpoint to resume from; start a new run "
                                   "with `tuitune train CONFIG`")
            latest, end = cps[-1], trainer.args.max_steps
            if end > 0 and int(latest.name.rsplit("-", 1)[-1]) >= end and len(cps) > 1:
                # Killed after saving its last step, before it finished: resumed from there the Trainer
                # trains one step past max_steps (its stop check follows a step), so the run ends from
                # the checkpoint before, training the same steps again as it would have.
                log(f"{latest.name} is the run's last step (saved before the run could finish); "
                    f"resuming from {cps[-2].name} to end it")
                latest = cps[-2]
            checkpoint = str(latest)
            log(f"resuming from {latest.name}")
            if is_main:
                run.append_event({"type": "lifecycle", "event": "resume", "checkpoint": checkpoint})
        reuse_freed_memory(cfg)
        trainer.train(resume_from_checkpoint=checkpoint)
        if watch is not None:
            watch.close()
        stopped = cb.stopped_on_request
        step = trainer.state.global_step
        if stopped:
            latest = run.latest_checkpoint() if is_main else None  # other nodes hold no whole checkpoint
            if keeps_folder:
                run.append_event({"type": "lifecycle", "event": "stopped", "step": step,
                                  "checkpoint": str(latest) if latest else None})
                run.write_state(status="stopped", stopped_at=time.time(), step=step,
                                **({"last_checkpoint": str(latest) if latest else None} if is_main else {}))
            notifier.tell("stopped")
            if cfg.distributed.nnodes > 1:  # `runs resume` continues one machine's runs only
                log(f"stopped at step {step}, every node" + (f"; the checkpoint is {latest}" if latest else ""))
            else:
                log(f"stopped at step {step}; resume with `tuitune runs resume {run.id}`")
            return 0
        final = save_final(trainer, tokenizer, run, adapter=cfg.method != "full", is_main=is_main)
        if is_main:
            run.append_event({"type": "lifecycle", "event": "finished", "step": step, "output": str(final)})
            run.write_state(status="finished", finished_at=time.time(), output=str(final), step=step)
            notifier.tell("finished")
        elif keeps_folder:  # another node: the output is node 0's
            run.append_event({"type": "lifecycle", "event": "finished", "step": step, "output": None})
            run.write_state(status="finished", finished_at=time.time(), step=step)
        log(f"finished: {final}" if is_main else "finished; the output is in node 0's run folder")
        return 0
    except BaseException as exc:  # noqa: BLE001 - the run must say why it ended, whatever it was
        if watch is not None:
            watch.close()
        if isinstance(exc, TuituneError):
            line = str(exc)
        elif isinstance(exc, KeyboardInterrupt):
            line = "interrupted (ctrl+c) before a checkpoint could be written"
        elif is_out_of_memory(exc):  # one line with the step, the peak and the ladder's next rung
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            line = oom_line(run, cfg, trainer.state.global_step + 1 if trainer is not None else None)
        else:
            traceback.print_exc()
            line = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if disk_full(exc, run.path):
                latest = run.latest_checkpoint()
                line = (f"disk full in {run.path} while saving; free space, then `tuitune runs resume {run.id}` "
                        f"continues from {latest.name if latest else 'the start'} (it is intact)")
        print(f"error: {line}", file=sys.stderr, flush=True)
        if keeps_folder:
            run.append_event({"type": "lifecycle", "event": "failed", "error": line})
            run.write_state(status="failed", error=line, failed_at=time.time())
            if notifier is not None:
                notifier.tell("failed")
        return 2 if isinstance(exc, TuituneError) else 1
    finally:
        if notifier is not None:
            notifier.close()  # the last message leaves (or gives up) before the process ends
        if lock is not None:
            lock.close()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    resume = "--resume" in argv
    args = [a for a in argv if a != "--resume"]
    if len(args) != 1:
        print("usage: python -m tuitune.train.worker RUN_DIR [--resume]", file=sys.stderr)
        return 2
    try:
        return run_worker(args[0], resume=resume)
    except TuituneError as exc:  # refused before it started (the folder is locked): leave the run alone
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
