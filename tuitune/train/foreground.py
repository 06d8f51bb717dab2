"""A run attached to the terminal (``tuitune train --foreground``, ``runs resume --foreground``).

The CLI process that checked the config holds torch and transformers by then (the template
check loads the tokenizer: ~400 MB on a CPU box) for a whole run in which it only copies the
worker's output. So it hands over to a fresh interpreter running this module: ``os.execv``
keeps the pid, so the shell's job control, ctrl+c and the exit status are the same, and the
copier imports nothing heavy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tuitune.fsutil import python_cmd
from tuitune.train.runfolder import RunFolder, process_start_time


def exec_foreground(run: RunFolder, resume: bool = False) -> int:
    """Become ``python -m tuitune.train.foreground RUN [--resume]``; returns only where exec is
    not how processes start (Windows), after running the worker here."""
    args = [str(run.path)] + (["--resume"] if resume else [])
    if os.name != "posix":
        return main(args)
    argv = [*python_cmd(), "-m", "tuitune.train.foreground", *args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)
    raise AssertionError("unreachable")  # pragma: no cover


def run_foreground(run: RunFolder, resume: bool = False) -> int:
    """Run the worker attached to this terminal (its output also goes to train.log)."""
    from tuitune.train.launcher import worker_command, worker_env

    cmd = worker_command(run, resume)
    ws = run.read_state().get("workspace") or str(run.path.parent.parent)
    with open(run.log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                cwd=ws, env=worker_env())
        run.write_state(pid=proc.pid, pgid=os.getpgid(proc.pid), pid_start=process_start_time(proc.pid),
                        started=time.time(), command=cmd)
        while True:
            try:
                for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                    log.write(chunk)
                    log.flush()
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()
                break
            except KeyboardInterrupt:
                # The worker got the same ctrl+c: it checkpoints and stops; keep copying what it says.
                continue
        return proc.wait()


def report(run: RunFolder) -> int:
    """The run's last line, and the exit status: 2 with the run's error where it failed."""
    status = run.status()
    print(f"run {run.id}: {status.get('status')}", flush=True)
    if status.get("status") == "failed":
        print(f"error: run {run.id} failed: {status.get('error')}", file=sys.stderr, flush=True)
        return 2
    return 0


def main(argv: list[str]) -> int:
    run = RunFolder(Path(argv[0]))
    run_foreground(run, resume="--resume" in argv[1:])
    return report(run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
