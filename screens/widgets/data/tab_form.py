"""What the Data step's tab forms share: labelled rows, the result line, paths relative to
the workspace, engine errors in the step's words, and the question before an overwrite.

A form gathers its fields, runs the engine in a thread worker and shows the worker's
result (returned, handled in ``on_worker_state_changed``) or its failure (one line, from
:func:`screens.workers.failure`) in its result line ``#<TAB>-result``. What another tab
needs to know (a file was written) goes up to the screen as :class:`DataForm.Written`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static
from textual.worker import Worker, WorkerState

from screens.widgets.choice import ChoiceScreen, overwrite_choices
from screens.workers import failure
from tuitune.errors import TuituneError, said
from tuitune.fsutil import next_free_path, output_exists
from tuitune.workspace import Workspace

#: The engine's fields as this step's controls name them: an engine error or note names its field
#: by these (``tuitune.errors``), so no flag reaches the screen.
LABELS = {
    "test_ratio": "Test ratio", "seed": "Seed", "group_by": "Group", "name": "Name", "count": "Count",
    "max_length": "Max len", "record": "Record", "sheet": "Sheet", "input_col": "Question",
    "output_col": "Answer", "system_col": "System col", "system": "System", "model": "Model",
    "template": "Template", "drop_placeholders": "the 'drop placeholders' box", "dedupe": "the 'dedupe' box",
    "preset": "the MedQA preset button", "to": "Records set to prompt records", "group_by_input": "Group on (Split tab)",
}
#: Per tab, what the output (``-o``) is called there.
OUTPUT_LABEL = {"convert": "Output", "split": "Folder", "selfcog": "Output"}


def field_row(label: str, widget) -> Horizontal:
    return Horizontal(Label(label, classes="field-label"), widget, classes="field")


def labels(tab: str) -> dict[str, str]:
    """The field labels of tab ``tab`` (its output's name too)."""
    return {**LABELS, "out": OUTPUT_LABEL.get(tab, "Output")}


def words(tab: str, message) -> str:
    """An engine error or note in tab ``tab``'s words: a field it names reads as the control's label."""
    return said(message, labels(tab))


def rel(root: Path, p: Path) -> str:
    """``p`` relative to the workspace ``root`` where it is inside it (``Workspace.rel``)."""
    return Workspace(Path(root)).rel(p)


def say(line: Static, text: Text | str, error: bool = False) -> None:
    """Write a tab's result line; an error reads ``error: ...`` in the error colour."""
    line.set_class(error, "error")
    line.update(Text(f"error: {text}", style="bold") if error else text)


class DataForm(VerticalScroll):
    """One tab's form. Subclasses set ``TAB`` and ``RUN`` and implement ``run`` and ``show_result``."""

    TAB = ""  # "convert", "split", ...: the result line is #<TAB>-result; errors use its words
    RUN = ""  # the id of the button that runs the tab's action
    TIPS: dict[str, str] = {}  # widget id: tooltip

    @dataclass
    class Written(Message):
        """A tab wrote ``path`` (a conversation file other tabs may use next)."""

        tab: str
        path: Path

    def __init__(self, **kwargs):
        super().__init__(classes="form", **kwargs)

    @property
    def workspace(self):
        return self.app.workspace

    def on_mount(self) -> None:
        for wid, tip in self.TIPS.items():
            self.query_one(f"#{wid}").tooltip = tip

    def run(self) -> None:  # pragma: no cover - abstract
        """Check the fields and start the tab's worker (ctrl+r, Enter, the Run button)."""
        raise NotImplementedError

    def show_result(self, result) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def show_error(self, message: str) -> None:
        self.say(words(self.TAB, message), error=True)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == self.RUN:
            self.run()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if (error := failure(event, labels(self.TAB))) is not None:
            self.show_error(error)
        elif event.state == WorkerState.SUCCESS and not event.worker.is_cancelled:
            self.show_result(event.worker.result)

    # --- helpers ------------------------------------------------------------------------------

    def say(self, text: Text | str, error: bool = False) -> None:
        say(self.query_one(f"#{self.TAB}-result", Static), text, error)

    def rel(self, p: Path) -> str:
        return rel(self.workspace.root, p)

    def path_of(self, text: str) -> Path:
        p = Path(text.strip()).expanduser()
        return p if p.is_absolute() else self.workspace.root / p

    def free(self, name: str) -> str:
        """``name`` (workspace-relative) or, when a file is there already, the first free ``x-2`` name."""
        return self.rel(next_free_path(self.path_of(name)))

    def value(self, wid: str) -> str:
        return self.query_one(f"#{wid}", Input).value.strip()

    def select(self, wid: str) -> str | None:
        v = self.query_one(f"#{wid}", Select).value
        return None if v is Select.NULL else v

    def set_value(self, wid: str, value: str) -> None:
        self.query_one(f"#{wid}", Input).value = value

    def whole(self, wid: str, what: str, low: int | None = None) -> int:
        """The whole number in field ``wid`` (named ``what`` in errors), at least ``low``."""
        try:
            v = int(self.value(wid))
        except ValueError:
            raise TuituneError(f"{what}: {self.value(wid)!r} is not a whole number") from None
        if low is not None and v < low:
            raise TuituneError(f"{what} {v}: must be at least {low}")
        return v

    def confirm_write(self, targets: list[Path], fresh: Path, go) -> None:
        """Call ``go(None)`` now if nothing in ``targets`` exists; else ask first: overwrite
        (``go(None)``), write to the free name ``fresh`` instead (``go(fresh)``), or cancel."""
        there = [t for t in targets if output_exists(t)]
        if not there:
            go(None)
            return
        names = " and ".join(self.rel(t) for t in there)
        verb = "exists" if len(there) == 1 else "exist"

        def answer(choice: str | None) -> None:
            if choice == "overwrite":
                go(None)
            elif choice == "new":
                go(fresh)
            else:
                self.say(f"Not written: {names} {verb} (nothing changed).")

        self.app.push_screen(ChoiceScreen("Overwrite?", f"{names} {verb}. Overwrite, write {self.rel(fresh)} "
                                          "instead, or cancel?", overwrite_choices()), answer)
