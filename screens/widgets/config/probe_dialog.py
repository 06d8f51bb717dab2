"""The Probe dialog: measure a saved config on this box (``tuitune train CONFIG --probe``'s engine,
:func:`tuitune.train.probe.probe_config`) and show its verdict, ETA and estimate beside the measured
peak; where it does not fit, the ladder's first rung that fits as a change to the config, which ``w``
writes as a new config (its name asked; an existing file only after a yes).

Opened by the Config step (the config being edited), the Train step (the config picked for a new run)
and the Environment step (a config of the workspace, measured beside the estimate). The probe runs in
a thread worker; Esc while it runs sets the engine's ``cancel`` event, which ends the probe's child
process, then closes the dialog.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Group
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from screens.widgets.choice import ChoiceScreen, PathScreen, overwrite_choices
from screens.workers import failure


def verdict_style(line: str) -> str:
    """The colour of a result line: the verdict green (fits), yellow (fits with a change) or red."""
    if not line.startswith("verdict:"):
        return "dim" if line.startswith("wrote ") else ""
    if line.startswith("verdict: fits"):
        return "bold green"
    return "bold yellow" if "does not fit as it is; with " in line else "bold red"  # a change makes it fit


def result_text(lines: list[str], dialog: bool = True) -> Text:
    """``ProbeResult.lines()`` as one Text, each line in its colour (never cut: it wraps); outside the
    dialog (``dialog=False``) without the key that writes the change."""
    out = Text()
    for i, line in enumerate(lines):
        key = " (w writes it as a new config)" if dialog else ""
        line = line.replace(" (--write FILE saves it as a new config)", key)
        out.append(("\n" if i else "") + line, style=verdict_style(line))
    return out


def verdict_line(result) -> str:
    """The verdict on one line, the change that fits named in it (for a line under a list)."""
    line = next((v for v in result.lines() if v.startswith("verdict:")), "verdict: ?").removeprefix("verdict: ")
    if result.chosen is not None and not result.fits:
        change = ", ".join(f"{k}: {json.dumps(new)}" for k, _, new in result.diff)
        line = f"does not fit as it is; with {change} it does"
    return line


class ProbeModal(ModalScreen):
    """Probe ``config`` (a file of the workspace) and show the result; dismissed with the
    ``ProbeResult`` (its ``written`` set when ``w`` wrote the change), or None (cancelled, failed)."""

    DEFAULT_CSS = """
    ProbeModal { align: center middle; }
    ProbeModal > Vertical { width: 112; max-width: 96%; height: auto; max-height: 96%; border: round $accent;
                            background: $surface; padding: 0 1; }
    ProbeModal .probe-title { text-style: bold; color: $accent; }
    ProbeModal VerticalScroll { height: auto; }
    ProbeModal #probe-verdict { height: auto; margin: 1 0 0 0; }
    ProbeModal #probe-progress, ProbeModal #probe-result, ProbeModal #probe-hint { height: auto; }
    ProbeModal #probe-hint { color: $text-muted; }
    """

    BINDINGS = [
        Binding("escape", "close", "Cancel / close", id="probe-close"),
        Binding("w", "write", "Write the change", id="probe-write"),
    ]

    @dataclass
    class Progress(Message):
        line: str

    @dataclass
    class Done(Message):
        result: object

    def __init__(self, workspace, config: Path, result=None, wait_for=()):
        super().__init__()
        #: Workers of the screen below that import transformers (the Config step's machine checks): the
        #: probe starts when they end, as transformers' lazy module is not safe to import from two
        #: threads at once (the race raises "cannot import name 'AutoTokenizer'"; tuitune.merge.shards).
        self.wait_for = [w for w in wait_for if not w.is_finished]
        self.workspace = workspace
        self.config = Path(config)
        self.result = result
        self.cancel = threading.Event()
        self.progress: list[str] = []
        self.started = time.monotonic()

    def rel(self, path: Path) -> str:
        root = self.workspace.root
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Probe {self.rel(self.config)}: will it fit, and when will it end?", classes="probe-title",
                         markup=False)
            yield Static("", id="probe-verdict")
            with VerticalScroll():
                yield Static("", id="probe-progress")
                yield Static("", id="probe-result")
            yield Static("", id="probe-hint")

    def on_resize(self) -> None:
        # The verdict and the keys stay on screen; the measurements scroll between them (80x24 included).
        self.query_one(VerticalScroll).styles.max_height = max(4, int(self.size.height * 0.96) - 8)

    def on_mount(self) -> None:
        self.verdict_widget = self.query_one("#probe-verdict", Static)
        self.verdict_widget.display = False
        if self.result is not None:
            self.show_result()
            return
        self._say_progress("starting: a few optimizer steps of this config on the longest batch of its data")
        self._ticker = self.set_interval(1.0, self._tick)
        self.probe()

    # --- the probe ----------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="probe", description="probe a config")
    def probe(self) -> None:
        from tuitune.train.probe import probe_config

        if self.wait_for:
            self.post_message(self.Progress("waiting for the config's checks to end first…"))
        while any(not w.is_finished for w in self.wait_for) and not self.cancel.is_set():
            time.sleep(0.1)
        result = probe_config(self.config, self.workspace.root, cancel=self.cancel,
                              log=lambda line: self.post_message(self.Progress(line)))
        self.post_message(self.Done(result))

    def running(self) -> bool:
        return any(w.group == "probe" and w.is_running for w in self.workers)

    def _tick(self) -> None:
        if self.running():
            self._hint(f"probing… {int(time.monotonic() - self.started)} s · Esc cancels "
                       "(ends the probe's process)" if not self.cancel.is_set() else "cancelling…")

    def _say_progress(self, line: str) -> None:
        self.progress.append(line)
        self.query_one("#probe-progress", Static).update(Text("\n".join(self.progress), style="dim"))
        self._tick()

    def _hint(self, text: str) -> None:
        self.query_one("#probe-hint", Static).update(text)

    def on_probe_modal_progress(self, message: Progress) -> None:
        self._say_progress(message.line)

    def on_probe_modal_done(self, message: Done) -> None:
        self.result = message.result
        self.show_result()

    def show_result(self) -> None:
        if hasattr(self, "_ticker"):
            self._ticker.stop()
        lines = self.result.lines()
        verdict = [line for line in lines if line.startswith("verdict:")]
        # Shown first, above the measurements: the change it speaks of is below it here.
        self.verdict_widget.update(result_text([v.replace("the change above", "the change below") for v in verdict]))
        self.verdict_widget.display = bool(verdict)
        self.query_one("#probe-progress", Static).display = False
        self.query_one("#probe-result", Static).update(result_text([line for line in lines if line not in verdict]))
        can_write = self.result.chosen is not None and self.result.written is None
        self._hint(("w writes the change as a new config · " if can_write else "") + "Esc closes")
        self.refresh_bindings()

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "probe" or event.state not in (WorkerState.ERROR, WorkerState.CANCELLED):
            return
        if hasattr(self, "_ticker"):
            self._ticker.stop()
        if self.cancel.is_set():  # Esc while it ran: the child has ended, nothing was kept
            self.dismiss(None)
            return
        error = failure(event) or "the probe was stopped"
        self.query_one("#probe-result", Static).update(Group(Text(error, style="bold red")))
        self._hint("Esc closes")

    # --- keys ---------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "write":
            return self.result is not None and self.result.chosen is not None and self.result.written is None
        return True

    def action_close(self) -> None:
        if self.running():
            self.cancel.set()
            self._tick()
            return
        self.dismiss(self.result)

    def action_write(self) -> None:
        """Ask for the new config's name (a free one offered), then write the config with the change."""
        from tuitune.fsutil import next_free_path

        if self.result is None or self.result.chosen is None:
            return
        offer = next_free_path(self.workspace.configs / f"{self.config.stem}-fits.yaml")

        def named(name: str | None) -> None:
            if not name:
                self._hint("not written: no file name given · w asks again · Esc closes")
                return
            if not name.endswith((".yaml", ".yml")):
                self._hint("not written: name the file configs/NAME.yaml · w asks again · Esc closes")
                return
            path = Path(name).expanduser()
            path = path if path.is_absolute() else self.workspace.root / path
            if not path.exists():
                self._write(path)
                return
            fresh = next_free_path(path)

            def answer(choice: str | None) -> None:
                if choice == "overwrite":
                    self._write(path)
                elif choice == "new":
                    self._write(fresh)
                else:
                    self._hint(f"not written: {self.rel(path)} kept · w asks again · Esc closes")

            self.app.push_screen(ChoiceScreen("Overwrite?", f"{self.rel(path)} exists. Overwrite it, write "
                                              f"{self.rel(fresh)} instead, or cancel?", overwrite_choices()), answer)

        self.app.push_screen(PathScreen("Write the change as", "The config with the change that fits, as a new "
                                        "file (in configs/, ending in .yaml):", self.rel(offer)), named)

    def _write(self, path: Path) -> None:
        from tuitune.config import load_config, save_config
        from tuitune.train.ladder import apply

        cfg = load_config(self.config, workspace=self.workspace.root)
        self.result.written = save_config(apply(cfg, self.result.chosen.changes), path)
        self.show_result()
        self._hint(f"wrote {self.rel(path)}: train it, or load it in the Config step · Esc closes")
