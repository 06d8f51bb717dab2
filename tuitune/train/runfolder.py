"""The run folder contract (see DESIGN.md): state.json, events.jsonl, train.log, control/.

Everything a UI knows about a run it learns here, from files: the worker writes
``state.json`` atomically and appends one JSON object a line to ``events.jsonl``;
readers follow the events by byte offset. Liveness is judged from the pid *and* that
pid's start time, so a recycled pid never makes a dead run look alive.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tuitune.errors import TuituneError
from tuitune.fsutil import atomic_write_json, fix_modes

LIVE = ("starting", "running", "stopping")
ENDED = ("stopped", "finished", "failed")


def trained_on(cfg) -> dict[str, str]:
    """Each training file of ``cfg`` (as the config names it) with its sha256 as the run starts: kept in
    state.json so Evaluate can tell a split redone after the run from the one it trained on."""
    from tuitune.fsutil import sha256_of

    files = {str(entry.path): cfg.resolve(entry.path) for entry in cfg.data.sources()}
    return {name: sha256_of(path) for name, path in sorted(files.items()) if path.is_file()}


def process_start_time(pid: int) -> float | None:
    """The start time of ``pid`` (seconds since the epoch), or None if there is no such process."""
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def is_alive(pid: int | None, start_time: float | None) -> bool:
    """True when ``pid`` runs and started when we recorded (within a second): not a recycled pid."""
    if not pid:
        return False
    started = process_start_time(pid)
    if started is None:
        return False
    try:
        import psutil

        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
    except Exception:
        return False
    return start_time is None or abs(started - float(start_time)) < 1.0


@dataclass
class RunFolder:
    path: Path

    def __post_init__(self):
        self.path = Path(self.path)

    # --- paths ---------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def state_path(self) -> Path:
        return self.path / "state.json"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def control(self) -> Path:
        return self.path / "control"

    @property
    def tracking(self) -> Path:
        """Where the trackers of ``training.report_to`` write (each its own folder, see ``tuitune.train.tracking``)."""
        return self.path / "tracking"

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    def exists(self) -> bool:
        return self.state_path.exists() or self.config_path.exists()

    # --- state ---------------------------------------------------------------------------
    def read_state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, OSError):
            # state.json is replaced atomically, so this is a damaged file, not a half-written one.
            return {"status": "failed", "error": f"{self.state_path}: unreadable state file"}

    def write_state(self, **changes: Any) -> dict:
        """Merge ``changes`` into state.json. The launcher (pid, process group) and the worker (its
        threads, status, step) both write it, at times in the same instant: the read, merge and
        rename happen under a lock, so neither write loses the other's fields."""
        import fcntl

        with open(self.path / ".state.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.read_state()
            state.update(changes)
            state["updated"] = time.time()
            atomic_write_json(self.state_path, state)
        if changes.get("status") == "finished" and changes.get("output"):
            # The final adapter/model (safetensors writes 0600): readable as the umask allows.
            fix_modes(changes["output"])
        return state

    def status(self) -> dict:
        """The state as a user should see it: a live status whose worker is gone is ``failed``."""
        state = self.read_state()
        status = state.get("status", "unknown")
        if status in LIVE and state.get("host", socket.gethostname()) == socket.gethostname():
            if not is_alive(state.get("pid"), state.get("pid_start")):
                # Give a worker that is just being spawned a moment before calling it dead.
                if not (status == "starting" and time.time() - state.get("updated", 0) < 30
                        and not state.get("pid")):
                    state["status"] = "failed"
                    state["error"] = state.get("error") or (
                        "the worker died without writing its end (killed, out of memory or a reboot); "
                        f"last log lines: {' | '.join(self.log_tail(3)) or 'none'}")
        return state

    # --- events --------------------------------------------------------------------------
    def append_event(self, event: dict) -> None:
        """Append one event as one line (a single write on an O_APPEND file: lines never interleave)."""
        event = {"time": time.time(), **event}
        line = (json.dumps(event, ensure_ascii=False, default=_jsonable) + "\n").encode("utf-8")
        fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # the umask decides
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def read_events(self, offset: int = 0, max_bytes: int | None = None) -> tuple[list[dict], int]:
        """Complete event lines from byte ``offset`` on: (events, new offset).

        A line still being written (no newline yet) is left for the next read.
        """
        follower = RunFollower(self, chunk_bytes=max_bytes, offset=offset)
        return follower.read(), follower.offset

    def iter_events(self) -> Iterator[dict]:
        events, _ = self.read_events(0)
        yield from events

    # --- checkpoints ---------------------------------------------------------------------
    def list_checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first.

        The Trainer writes ``trainer_state.json`` last, so a checkpoint is complete once that
        file is there and parses: a save cut short (full disk, kill -9) is never offered.
        """
        if not self.checkpoints.is_dir():
            return []
        found = []
        for p in self.checkpoints.glob("checkpoint-*"):
            step = p.name.rsplit("-", 1)[-1]
            if step.isdigit() and _complete(p):
                found.append((int(step), p))
        return [p for _, p in sorted(found)]

    def latest_checkpoint(self) -> Path | None:
        cps = self.list_checkpoints()
        return cps[-1] if cps else None

    def checkpoint(self, step: int | str) -> Path:
        """Checkpoint ``step`` (``58`` or ``checkpoint-58``) if complete; else a one-line error listing them."""
        name = str(step)
        name = name if name.startswith("checkpoint-") else f"checkpoint-{name}"
        cps = self.list_checkpoints()
        for cp in cps:
            if cp.name == name:
                return cp
        have = ", ".join(cp.name.rsplit("-", 1)[-1] for cp in cps) or "none"
        raise TuituneError(f"{self.id}: no complete {name}; checkpoints: {have}")

    def rewind_to(self, checkpoint: Path) -> Path | None:
        """Make ``checkpoint`` the newest: later ones move to ``checkpoints/.superseded-<time>/``.

        Resuming from an earlier checkpoint starts a new trajectory from there; the later
        checkpoints belong to the old one. They are kept (moved aside, never deleted) and no
        longer listed, so every "latest checkpoint" afterwards agrees with the run's step.
        """
        later = [cp for cp in self.list_checkpoints() if _step_of(cp) > _step_of(checkpoint)]
        if not later:
            return None
        aside = self.checkpoints / f".superseded-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 2
        while aside.exists():
            aside, n = self.checkpoints / f".superseded-{time.strftime('%Y%m%d-%H%M%S')}-{n}", n + 1
        aside.mkdir()
        for cp in later:
            os.replace(cp, aside / cp.name)
        return aside

    def delete(self) -> None:
        """Remove the run folder; refused while its worker is alive (stop it first)."""
        import shutil

        st = self.status()
        if st.get("status") in LIVE:
            raise TuituneError(f"{self.id}: is {st.get('status')} (pid {st.get('pid')}); stop it first with "
                               f"`tuitune runs stop {self.id}`, then delete it")
        # Rename first, so a half-deleted folder is never listed as a run.
        gone = self.path.with_name(f".{self.id}.deleting-{os.getpid()}")
        os.replace(self.path, gone)
        shutil.rmtree(gone, ignore_errors=True)

    # --- control -------------------------------------------------------------------------
    def request(self, what: str) -> Path:
        """Ask the worker to ``stop`` or ``save`` (it looks at control/ after every step)."""
        if what not in ("stop", "save"):
            raise ValueError(what)
        self.control.mkdir(parents=True, exist_ok=True)
        p = self.control / what
        p.write_text(str(time.time()))
        return p

    def take_request(self, what: str) -> bool:
        """For the worker: True (once) if ``what`` was requested."""
        p = self.control / what
        try:
            p.unlink()
            return True
        except FileNotFoundError:
            return False

    # --- log -----------------------------------------------------------------------------
    def log_tail(self, lines: int = 20, max_bytes: int = 64_000) -> list[str]:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - max_bytes))
                data = fh.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        # Progress bars redraw with \r: keep what the line finally showed.
        out = [l.rsplit("\r", 1)[-1].rstrip() for l in data.splitlines()]
        return [l for l in out if l.strip()][-lines:]


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[-1])


def _complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def _jsonable(obj):
    try:
        return float(obj)
    except Exception:
        return str(obj)


def runs_dir(workspace) -> Path:
    return Path(workspace) / "runs"


def list_runs(workspace) -> list[RunFolder]:
    """The workspace's runs, newest first."""
    root = runs_dir(workspace)
    if not root.is_dir():
        return []
    runs = [RunFolder(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    runs = [r for r in runs if r.exists()]
    return sorted(runs, key=lambda r: (r.read_state().get("created", 0), r.id), reverse=True)


def find_run(workspace, run: str) -> RunFolder:
    """A run by id, unique id prefix, or path."""
    p = Path(run)
    if p.is_dir() and (p / "state.json").exists():
        return RunFolder(p)
    root = runs_dir(workspace)
    exact = root / run
    if exact.is_dir():
        return RunFolder(exact)
    matches = [r for r in list_runs(workspace) if r.id.startswith(run) or r.id.endswith(run)]
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(r.id for r in list_runs(workspace)[:8]) or "none yet"
    if not matches:
        raise TuituneError(f"no run {run!r} in {root}; runs: {names}")
    raise TuituneError(f"{run!r} matches several runs ({', '.join(m.id for m in matches)}); give more of the id")


# --- reading events.jsonl ------------------------------------------------------------------------

#: How much of events.jsonl one read takes: a big run opens in steps, not in one long read.
CHUNK_BYTES = 1 << 20


def parse_lines(data: bytes) -> list[dict]:
    """JSON objects from complete lines (one ``json.loads`` for the lot; per line if one is damaged)."""
    body = data.strip()
    if not body:
        return []
    try:
        out = json.loads(b"[" + body.replace(b"\n", b",") + b"]")
        if all(isinstance(e, dict) for e in out):
            return out
    except ValueError:
        pass
    events = []
    for raw in data.splitlines():
        if raw.strip():
            try:
                e = json.loads(raw)
            except ValueError:
                continue  # a damaged line (a crash mid-write) costs that line only
            if isinstance(e, dict):
                events.append(e)
    return events


class RunFollower:
    """Reads a run's ``events.jsonl`` from a byte offset, at most ``chunk_bytes`` per ``read()``
    (None: all there is). The one reader of the file: the dashboard, ``runs follow`` and
    ``RunFolder.read_events`` go through it.

    ``at_end`` says whether the last read reached the end of what is written. If the
    file shrinks (the run folder was replaced), ``reset`` turns true once and reading
    starts over from the top.
    """

    def __init__(self, run: RunFolder | str | Path, chunk_bytes: int | None = CHUNK_BYTES, offset: int = 0):
        self.run = run if isinstance(run, RunFolder) else RunFolder(Path(run))
        self.chunk_bytes = chunk_bytes
        self.offset = offset
        self.at_end = False
        self.reset = False

    def size(self) -> int:
        try:
            return os.stat(self.run.events_path).st_size
        except FileNotFoundError:
            return 0

    def start_at_tail(self, max_bytes: int) -> bool:
        """Read only the last ``max_bytes`` of the file from here on, from the first line that starts in
        them; False (the offset left as it is) where the file is no longer than that."""
        try:
            with open(self.run.events_path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size <= max_bytes:
                    return False
                fh.seek(size - max_bytes)
                self.offset = size - max_bytes + len(fh.readline())  # past the rest of a line begun before
                return True
        except OSError:
            return False

    def read(self) -> list[dict]:
        """The events on the next complete lines (see ``read_bytes``)."""
        return parse_lines(self.read_bytes())

    def read_bytes(self) -> bytes:
        """The next complete lines, up to ``chunk_bytes`` of them (more only if one line is longer)."""
        self.reset = False
        try:
            fh = open(self.run.events_path, "rb")
        except FileNotFoundError:
            self.at_end = True
            return b""
        with fh:
            size = os.fstat(fh.fileno()).st_size
            if size < self.offset:
                self.offset = 0
                self.reset = True
            start = self.offset
            fh.seek(start)
            data = fh.read() if self.chunk_bytes is None else fh.read(self.chunk_bytes)
            end = data.rfind(b"\n")
            while end < 0 and self.chunk_bytes is not None and self.offset + len(data) < size:
                # One line longer than a chunk: keep reading until it ends (or the file does).
                more = fh.read(self.chunk_bytes)
                if not more:
                    break
                data += more
                end = data.rfind(b"\n")
            # At the end when this read reached the end of the file (a partial last line waits).
            self.at_end = start + len(data) >= size
            if end < 0:
                return b""
            self.offset = start + end + 1
        return data[: end + 1]
