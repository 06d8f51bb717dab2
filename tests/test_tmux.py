"""End to end: the real `tuitune` in a real terminal (tmux), driven by keys, read off the screen."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)"),
]


class Tmux:
    def __init__(self, cwd: Path, width: int = 100, height: int = 32):
        self.name = f"tuitune-test-{uuid.uuid4().hex[:8]}"
        self.cwd = cwd
        self.size = (width, height)

    def start(self, command: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
        env["TERM"] = "xterm-256color"
        # After the app exits, the pane shows this marker, so the test can see a clean exit.
        script = f"{command}; echo TUITUNE-EXITED-$?; sleep 60"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(self.size[0]),
                        "-y", str(self.size[1]), "-c", str(self.cwd), script], check=True, env=env)

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True,
                              text=True, check=True).stdout

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} did not appear within {timeout}s; the screen was:\n{screen}")

    def wait_gone(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text not in self.screen():
                return
            time.sleep(0.2)
        raise AssertionError(f"{text!r} still on screen after {timeout}s:\n{self.screen()}")

    def goto(self, step, attempts: int = 3) -> None:
        """Esc, then the step's number key, until the step is shown (as a person would retry).

        A step may open with the cursor in a text field, where digits are typed: Esc leaves
        it. On a loaded machine the step can still be mounting (and focus its first field)
        after the Esc, so the digit lands in the field; then Esc and the digit again.
        """
        for attempt in range(attempts):
            self.keys("Escape")
            time.sleep(0.3)  # Esc and a digit at once would arrive as alt+digit, as in any terminal
            self.keys(step.number)
            try:
                self.wait_for(f"▶ {step.number} {step.title}", timeout=20)
            except AssertionError:
                if attempt == attempts - 1:
                    raise
                continue
            time.sleep(1.0)  # let the step finish mounting before the next Esc
            return

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(tmp_path)
    yield t
    t.kill()


def test_real_app_in_tmux_moves_between_steps_and_quits(tmux, tmp_path, tiny_model):
    from tuitune.steps import STEPS
    from tuitune.sample import write_demo_workspace

    ws = write_demo_workspace(tmp_path / "demo").root
    tmux.cwd = ws
    tmux.start(f"{shlex.quote(sys.executable)} -m tuitune")
    # First paint, then the checks arrive from the child process.
    tmux.wait_for("▶ 1 Environment")
    # The checks' table (on a box without a GPU the cuda row is a warning, not a failure).
    tmux.wait_for("cuda", timeout=120)
    for step in list(STEPS[1:]) + [STEPS[0]]:
        tmux.goto(step)
    # The command palette can take you to a step by name.
    tmux.keys("C-p")
    tmux.wait_for("Search for commands")
    tmux.keys("Help")
    tmux.wait_for("Help for the focused field")
    tmux.keys("Enter")
    tmux.wait_for("What this machine can do")  # the help text itself, not the palette
    tmux.keys("Escape")
    # (Esc then q at once would reach the app as alt+q, as in any terminal.)
    tmux.wait_gone("What this machine can do")
    tmux.keys("q")
    tmux.wait_for("TUITUNE-EXITED-0", timeout=30)
