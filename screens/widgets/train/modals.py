"""The Train step's dialogs: start a run from a saved config (with a name; probed first where you
ask), pick the checkpoint a resume continues from, pick a run whose loss the chart overlays, and
confirm a kill or a delete."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import Worker

from screens.workers import failure
from tuitune.render import RUN_STATUS_STYLE
from tuitune.train.formatting import format_loss, format_steps
from tuitune.train.watch import RunRow


class NewRunModal(ModalScreen[str | None]):
    """Pick a config in configs/, optionally name the run; Enter starts a detached run; ``p``
    probes the highlighted config first (the Probe dialog), its verdict then shown here.

    Dismissed with the new run's id. An empty name gives the default id (date-time and
    the config's name), as ``tuitune train CONFIG`` without ``--name`` does.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="train-new-cancel"),
                Binding("p", "probe", "Probe", id="train-new-probe",
                        tooltip="Measure the highlighted config on this machine first: fits? ETA?")]

    @dataclass
    class Started(Message):
        run_id: str
        pid: int

    def __init__(self, workspace, probe: bool = False):
        super().__init__()
        self.workspace = workspace
        self.probe_first = probe  # opened by the Train step's p: probe the highlighted config at once

    def compose(self) -> ComposeResult:
        configs = self.workspace.config_files()
        with Vertical(id="train-new-box"):
            yield Label("Start a run from a saved config", classes="section-title")
            options = [Option(p.name, id=str(p)) for p in configs]
            lst = OptionList(*options, id="train-new-configs")
            lst.tooltip = ("The configs in this workspace's configs/ folder. "
                           "Enter starts a run from the highlighted one.")
            yield lst
            with Horizontal(id="train-new-name-row"):
                yield Label("run name", classes="field-label")
                yield Input(id="train-new-name", compact=True, placeholder="optional: date-time and the config's name",
                            tooltip="The run's id and folder name under runs/ (letters, digits, . _ -). "
                            "Empty: the date-time and the config's name.")
            if configs:
                hint = ("Enter starts the run (it keeps going if you quit) · p probes it first · Tab: the name · "
                        "Esc cancels")
            else:
                hint = f"No configs in {self.workspace.configs}: make one in the Config step (3) · Esc closes"
            yield Static(hint, id="train-new-hint", classes="hint")
            yield Static("", id="train-new-probe")
            yield Static("", id="train-new-error", classes="error")

    def on_mount(self) -> None:
        lst = self.query_one(OptionList)
        if lst.option_count:
            lst.highlighted = 0
        lst.focus()
        if self.probe_first and lst.option_count:
            self.call_after_refresh(self.action_probe)

    def action_probe(self) -> None:
        """Probe the highlighted config; its verdict stays here, under the list, when the dialog closes."""
        from screens.widgets.config.probe_dialog import ProbeModal, verdict_line, verdict_style

        lst = self.query_one(OptionList)
        if lst.highlighted is None:
            self.query_one("#train-new-error", Static).update(Text("Pick a config first.", style="bold red"))
            return
        option = lst.get_option_at_index(lst.highlighted)

        def closed(result) -> None:
            if result is None:
                return
            verdict = verdict_line(result)
            self.query_one("#train-new-probe", Static).update(
                Text(f"probe of {option.prompt}: {verdict}", style=verdict_style(f"verdict: {verdict}")))

        self.app.push_screen(ProbeModal(self.workspace, Path(option.id)), closed)

    @on(OptionList.OptionSelected, "#train-new-configs")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self._start_option(event.option)

    @on(Input.Submitted, "#train-new-name")
    def _named(self) -> None:
        lst = self.query_one(OptionList)
        if lst.highlighted is None:
            self.query_one("#train-new-error", Static).update(Text("Pick a config first.", style="bold red"))
            return
        self._start_option(lst.get_option_at_index(lst.highlighted))

    def _start_option(self, option) -> None:
        if any(w.group == "train-start" and w.is_running for w in self.workers):
            return
        self.query_one("#train-new-error", Static).update("")
        self.query_one("#train-new-hint", Static).update(f"starting a run from {option.prompt}…")
        self.start(option.id, self.query_one("#train-new-name", Input).value.strip() or None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="train-start", description="start a run")
    def start(self, config: str, name: str | None = None) -> None:
        from tuitune.train.launcher import start_run  # validates the config (pydantic): not at import

        run, pid = start_run(config, self.workspace.root, name=name)
        self.post_message(self.Started(run.id, pid))

    def on_new_run_modal_started(self, message: Started) -> None:
        self.dismiss(message.run_id)

    @on(Worker.StateChanged)
    def _failed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "train-start" and (error := failure(event)) is not None:
            self.query_one("#train-new-hint", Static).update("Enter tries again · Esc cancels")
            self.query_one("#train-new-error", Static).update(Text(error, style="bold red"))

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmModal(ModalScreen[bool]):
    """A yes/no question: y or Enter on Yes confirms, n or Esc cancels."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm-yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm-no"),
    ]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="train-confirm-box"):
            yield Static(self.question, id="train-confirm-question")
            with Horizontal(id="train-confirm-buttons"):
                yield Button("Yes (y)", id="confirm-yes", variant="error", compact=True)
                yield Button("No (n)", id="confirm-no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class PickModal(ModalScreen):
    """One item to pick from a list: the first is highlighted, Enter dismisses with the option's
    ``value``, Esc (a subclass's ``cancel`` binding) with None."""

    def on_mount(self) -> None:
        lst = self.query_one(OptionList)
        lst.highlighted = 0
        lst.focus()

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.value(event.option.id))

    def value(self, option_id: str):
        return option_id

    def action_cancel(self) -> None:
        self.dismiss(None)


class ResumeModal(PickModal):
    """Pick the checkpoint a resume continues from (newest first); dismissed with its step."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="train-resume-cancel")]

    def __init__(self, run_id: str, steps: list[int]):
        super().__init__()
        self.run_id = run_id
        self.steps = sorted(steps, reverse=True)

    def compose(self) -> ComposeResult:
        with Vertical(id="train-resume-box"):
            yield Label(f"Resume {self.run_id} from", classes="section-title")
            options = [Option(f"checkpoint-{s}" + ("  (newest)" if i == 0 else ""), id=str(s))
                       for i, s in enumerate(self.steps)]
            yield OptionList(*options, id="train-resume-checkpoints")
            yield Static("Enter resumes from the highlighted checkpoint · Esc cancels. From an earlier one, "
                         "the later checkpoints are moved to checkpoints/.superseded-*/ (kept, not deleted).",
                         id="train-resume-hint", classes="hint")

    def value(self, option_id: str) -> int:
        return int(option_id)


class OverlayModal(PickModal):
    """Pick another run whose train loss the chart draws over this run's; dismissed with its id."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="train-overlay-cancel")]

    def __init__(self, run_id: str, rows: list[RunRow]):
        super().__init__()
        self.run_id = run_id
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(id="train-overlay-box"):
            yield Label(f"Compare {self.run_id}'s loss with", classes="section-title")
            options, width = [], max(len(r.id) for r in self.rows)
            for r in self.rows:
                prompt = Text(r.id.ljust(width), style="bold")
                prompt.append(f"  {r.status:<8}", style=RUN_STATUS_STYLE.get(r.status, ""))
                prompt.append(f"  step {format_steps(r.step, r.total_steps)}  loss {format_loss(r.last_loss)}",
                              style="dim")
                options.append(Option(prompt, id=r.id))
            yield OptionList(*options, id="train-overlay-runs")
            yield Static("Enter draws the highlighted run's loss over this one's · o again takes it away · "
                         "Esc cancels", id="train-overlay-hint", classes="hint")
