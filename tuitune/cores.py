"""CPU threads for tuitune's heavy processes on a machine without a GPU: share the cores, don't fight.

torch sizes its thread pools (intra-op through OpenMP, with MKL and oneDNN in it, and inter-op)
to every core of the machine. Two such processes at once, a training run and a second one, or
a chat or eval beside a run, then run twice as many busy threads as there are cores, and
OpenMP's threads wait on each other at every parallel region for the one the kernel took off
its core: on a 2-core box each fell to about 21 tokens/s from 235 alone (issue 20, item 16).
So a training worker, chat or eval on a CPU-only machine sizes its pools to the cores that no
other tuitune process holds (:func:`share_cores`), before its heavy work starts:

* the first process alone takes every core; one that comes later takes the cores left, and
  at least its fair share (cores / processes) and never fewer than 1. A training worker
  looks again every ``REBALANCE_EVERY`` seconds between steps (:meth:`Share.rebalance`):
  it gives back what is over its share when another process came and takes the cores back
  when it went. A process that holds threads but used under a fifth of a core since the last
  look (over ``SAMPLE_SECONDS`` at the start) is not counted: a chat waiting for the next
  question, the app with a model loaded. chat and eval size when they load a model
  (``tuitune.loading.load_model``, in the CLI and in the app).
* a thread count the user set (``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` in the environment,
  as torchrun sets for several processes) is kept as it is, and claimed, so others count it.
* on a machine with a GPU nothing changes.
* the process says so: ``using 1 of 2 CPU threads: run 20261201-tiny holds 1`` (train.log, or
  stderr for chat and eval where another process holds cores).

Who holds what is read from two places, under one lock, so that two processes starting
together never both see the machine free:

* claims: one small JSON file per sized process (pid, its start time, threads, what it is) in
  the user cache (``$TUITUNE_CORES_DIR``, else ``cache_root()/cores``: ``~/.cache/tuitune/cores``),
  removed when the process exits and, when it was killed, by the next reader once the pid is
  gone or belongs to another process (the start time differs). The user cache rather than the
  workspace because cores belong to the machine: a chat in one workspace competes with a run
  in another. Per user, because other users' processes are not ours to size.
* the workspace's run folders (``RunFolder.status()``, their one reader, with the worker's
  liveness): a live run whose worker has not claimed (a worker of an older tuitune) counts as
  holding the threads its state.json records, else every core (torch's default).

Light: no torch unless threads are set.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: Where claims live instead of ``cache_root()/cores`` (tests point it at a temporary folder).
CORES_DIR_ENV = "TUITUNE_CORES_DIR"
#: Set beside OMP_NUM_THREADS when tuitune set it, so a child process knows the count is not the user's.
SIZED_ENV = "TUITUNE_SIZED_THREADS"
#: The variables through which a user fixes the thread count (OpenMP's and MKL's).
USER_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: Seconds between a training worker's looks at who else holds cores.
REBALANCE_EVERY = 10.0
#: A holder that used less than this share of one core since the last look is idle (not counted).
IDLE_CORES = 0.2
#: Seconds a starting process watches the others' CPU time to tell the idle ones (only when there are some).
SAMPLE_SECONDS = 0.5


@dataclass(frozen=True)
class Holder:
    """Another tuitune process holding CPU threads."""

    what: str  # "run 20261201-tiny", "tuitune chat (pid 4242)"
    pid: int
    threads: int
    idle: bool = False

    def words(self) -> str:
        return f"{self.what} holds {self.threads}" + (" but is idle" if self.idle else "")


def cpu_cores() -> int:
    """The cores this process may use, as torch counts them by default: the CPUs it may run on
    (affinity), physical cores only where the machine has two threads a core, and no more than a
    cgroup CPU quota (a container's ``--cpus``) allows."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        import psutil

        logical, physical = psutil.cpu_count(logical=True), psutil.cpu_count(logical=False)
        if logical and physical and physical < logical:
            n = max(1, n * physical // logical)
    except Exception:
        pass
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))  # ceil: 1.5 CPUs is 2 threads
    except (OSError, ValueError):
        pass
    return max(1, n)


def user_threads(environ=os.environ) -> tuple[str, int] | None:
    """(variable, count) where the user fixed the thread count in the environment, else None.

    A count tuitune itself set for this process tree (``SIZED_ENV`` beside it) is not the user's.
    """
    for name in USER_ENV:
        text = (environ.get(name) or "").strip()
        if text.isdigit() and int(text) >= 1 and text != environ.get(SIZED_ENV):
            return name, int(text)
    return None


def plan(total: int, others: list[Holder]) -> int:
    """The threads for a process on ``total`` cores beside ``others``: the cores they do not hold
    (idle ones hold none), at least its fair share of the busy processes, never fewer than 1."""
    busy = [h for h in others if not h.idle]
    free = total - sum(h.threads for h in busy)
    return max(1, free, total // (len(busy) + 1))


def claims_dir() -> Path:
    if os.environ.get(CORES_DIR_ENV):
        return Path(os.environ[CORES_DIR_ENV])
    from tuitune.sample import cache_root

    return cache_root() / "cores"


def process_label(argv: list[str] | None = None) -> str:
    """What this process is, for another's log: ``tuitune chat (pid 4242)``, ``the tuitune app (pid 7)``."""
    argv = sys.argv[1:] if argv is None else argv
    verb = next((a for a in argv if a in ("chat", "eval", "merge", "export", "data", "env")), None)
    return f"{'tuitune ' + verb if verb else 'the tuitune app'} (pid {os.getpid()})"


class Registry:
    """The claims folder: read the others' claims, write and remove this process's (see the module)."""

    def __init__(self, folder: Path | None = None, workspace: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else claims_dir()
        self.workspace = workspace

    def __enter__(self) -> "Registry":
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.folder / ".lock", "a+")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        self._lock.close()  # closing releases the lock

    def holders(self, me: int | None = None) -> list[Holder]:
        """Every live tuitune process but ``me`` (this process) that holds threads; stale claims removed."""
        from tuitune.train.runfolder import is_alive

        me = os.getpid() if me is None else me
        out: dict[int, Holder] = {}
        for path in sorted(self.folder.glob("*.json")):
            try:
                claim = json.loads(path.read_text(encoding="utf-8"))
                pid = int(claim["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not a claim (claims are written whole, by rename)
            if pid == me:
                continue
            if not is_alive(pid, claim.get("start")):
                path.unlink(missing_ok=True)
                continue
            out[pid] = Holder(str(claim.get("what") or f"pid {pid}"), pid, max(1, int(claim.get("threads") or 1)))
        for holder in self._runs(me, set(out)):
            out[holder.pid] = holder
        return list(out.values())

    def _runs(self, me: int, claimed: set[int]) -> list[Holder]:
        """The workspace's live runs on this host whose worker has no claim (see the module)."""
        if self.workspace is None:
            return []
        import socket

        from tuitune.train.runfolder import LIVE, list_runs

        out = []
        for run in list_runs(self.workspace):
            st = run.status()
            pids = {p for p in (st.get("pid"), st.get("worker_pid")) if p}
            if (st.get("status") not in LIVE or not pids or me in pids or pids & claimed
                    or st.get("host", socket.gethostname()) != socket.gethostname()):
                continue
            out.append(Holder(f"run {run.id}", int(st.get("worker_pid") or st["pid"]),
                              int(st.get("threads") or cpu_cores())))
        return out

    def claim(self, threads: int, what: str) -> Path:
        from tuitune.fsutil import atomic_write_json
        from tuitune.train.runfolder import process_start_time

        pid = os.getpid()
        path = self.folder / f"{pid}.json"
        atomic_write_json(path, {"pid": pid, "start": process_start_time(pid), "threads": threads, "what": what,
                                 "since": time.time()})
        return path


def _has_gpu() -> bool:
    from tuitune.hardware import probe_hardware

    if probe_hardware().cuda:
        return True
    if sys.platform == "darwin":  # Apple's GPU: the heavy work is not on the CPU's threads
        try:
            import torch

            return bool(torch.backends.mps.is_available())
        except Exception:
            return False
    return False


def set_threads(n: int, first: bool = False) -> None:
    """torch's pools to ``n`` threads, and OMP_NUM_THREADS for child processes (marked as tuitune's).

    Call it from the thread that runs the heavy work (each thread keeps its own OpenMP count;
    threads started later take the last one set). ``first``: also the inter-op pool, which can be
    sized only before it is used.
    """
    os.environ["OMP_NUM_THREADS"] = os.environ[SIZED_ENV] = str(n)
    import torch

    torch.set_num_threads(n)
    if first:
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:
            pass  # already used in this process: it stays as it is


class Share:
    """This process's share of the cores (see :func:`share_cores`)."""

    def __init__(self, registry: Registry, what: str, total: int, threads: int, fixed: bool, log: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic):
        self.registry, self.what, self.total, self.threads, self.fixed = registry, what, total, threads, fixed
        self.log, self.clock = log, clock
        self.next_look = clock() + REBALANCE_EVERY
        self._cpu: dict[int, tuple[float, float]] = {}  # pid -> (wall clock, CPU seconds) at the last look
        self.path: Path | None = None

    def release(self) -> None:
        """Remove this process's claim (at exit; a fork's child leaves its parent's alone)."""
        if self.path is not None and self.path.name == f"{os.getpid()}.json":
            self.path.unlink(missing_ok=True)

    def _idle(self, holders: list[Holder]) -> list[Holder]:
        """``holders``, those that used under ``IDLE_CORES`` of a core since the last look marked idle."""
        import psutil

        out, now, seen = [], time.monotonic(), {}
        for h in holders:
            try:
                t = psutil.Process(h.pid).cpu_times()
                cpu = t.user + t.system
            except Exception:
                out.append(h)
                continue
            seen[h.pid] = (now, cpu)
            before = self._cpu.get(h.pid)
            idle = before is not None and now > before[0] and (cpu - before[1]) / (now - before[0]) < IDLE_CORES
            out.append(Holder(h.what, h.pid, h.threads, idle=idle))
        self._cpu = seen
        return out

    def rebalance(self, force: bool = False) -> int | None:
        """Look again who holds cores (at most every ``REBALANCE_EVERY`` s unless ``force``); resize
        this process's pools and claim when its share changed. Returns the new count, or None."""
        if self.fixed or (not force and self.clock() < self.next_look):
            return None
        self.next_look = self.clock() + REBALANCE_EVERY
        try:
            with self.registry as reg:
                others = self._idle(reg.holders())
                n = plan(self.total, others)
                if n == self.threads:
                    return None
                self.path = reg.claim(n, self.what)
        except OSError:  # the claims folder went away or filled the disk: keep the threads, look again later
            return None
        set_threads(n)
        self.threads = n
        self.log(f"now {describe(n, self.total, others)}")
        return n


def describe(n: int, total: int, others: list[Holder]) -> str:
    """``using 1 of 2 CPU threads: run X holds 1`` (or: no other tuitune process is using the CPU)."""
    why = ", ".join(h.words() for h in others) if others else "no other tuitune process is using the CPU"
    return f"using {n} of {total} CPU threads: {why}"


_current: Share | None = None


def share_cores(what: str | None = None, workspace: str | Path | None = None,
                log: Callable[[str], None] | None = None, quiet_alone: bool = False,
                folder: Path | None = None) -> Share | None:
    """Size this process's CPU thread pools beside the other tuitune processes (see the module).

    ``what`` names this process in the others' logs (default: :func:`process_label`);
    ``workspace``: whose run folders to read too; ``log``: where the line goes (stderr by
    default); ``quiet_alone``: say nothing when no other process holds cores and the user set
    nothing (chat and eval: no noise in the common case). Returns the share (None on a machine
    with a GPU, where nothing changes). A second call in the same process looks again.
    """
    global _current
    if _current is not None:
        _current.rebalance(force=True)
        return _current
    if _has_gpu():
        return None
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    total = cpu_cores()
    fixed = user_threads()
    registry = Registry(folder, workspace)
    share = Share(registry, what or process_label(), total, fixed[1] if fixed else total, fixed=fixed is not None,
                  log=say)
    try:
        if not fixed:
            with registry as reg:
                holders = share._idle(reg.holders())  # a first look at their CPU time, to tell the idle ones
            if holders:
                time.sleep(SAMPLE_SECONDS)  # not holding the lock: a process waiting on it would look idle
        with registry as reg:
            others = [] if fixed else share._idle(reg.holders())
            if not fixed:
                share.threads = plan(total, others)
            share.path = reg.claim(share.threads, share.what)
    except OSError as exc:  # no writable cache (a read-only home): the threads stay as torch sizes them
        say(f"note: CPU threads not shared with other tuitune processes ({registry.folder}: {exc.strerror or exc}; "
            f"set {CORES_DIR_ENV} to a writable folder)")
        return None
    atexit.register(share.release)
    _current = share
    n = share.threads
    if fixed:  # torch and OpenMP read the variable themselves: nothing to set
        say(f"using {n} CPU thread{'s' if n != 1 else ''}: {fixed[0]}={n} is set, and kept (without it the "
            f"{total} cores are shared with other tuitune processes)")
    else:
        set_threads(n, first=True)
        if others or not quiet_alone:
            say(describe(n, total, others))
    return share
