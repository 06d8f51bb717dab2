"""A small modal question with a few answers, each on a key: overwrite / new name / cancel,
save / discard / stay. Escape always means the harmless answer (cancel). And the one that
asks for a file name (Save of a new config).

The free name offered instead of writing over a file (``x.jsonl`` → ``x-2.jsonl``) is
``tuitune.fsutil.next_free_path``, the engine's, as the CLI's ``--force`` message uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


@dataclass(frozen=True)
class Choice:
    value: str    # what the screen is dismissed with
    label: str    # the button's text
    key: str      # the key that picks it
    variant: str = "default"


class ChoiceScreen(ModalScreen[str]):
    """Ask ``question``; dismissed with the chosen ``Choice.value`` (``cancel`` on Escape)."""

    DEFAULT_CSS = """
    ChoiceScreen { align: center middle; }
    ChoiceScreen > Vertical { width: 70; max-width: 95%; height: auto; border: round $warning;
                              background: $surface; padding: 0 1; }
    ChoiceScreen .choice-title { text-style: bold; color: $warning; }
    ChoiceScreen .choice-text { margin: 1 0; }
    ChoiceScreen Horizontal { height: auto; }
    ChoiceScreen Button { margin: 0 1 0 0; }
    """

    #: The keys an answer may sit on (each question uses a few of them).
    KEYS = "onsdlcq"
    BINDINGS = [Binding("escape", "pick('cancel')", "Cancel", id="choice-cancel"),
                *[Binding(k, f"key('{k}')", show=False) for k in KEYS]]

    def __init__(self, title: str, question: str, choices: list[Choice], cancel: str = "cancel"):
        super().__init__()
        self.title_text = title
        self.question = question
        self.choices = choices
        self.cancel_value = cancel

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, classes="choice-title", markup=False)
            yield Static(self.question, classes="choice-text", markup=False)
            with Horizontal():
                for c in self.choices:
                    yield Button(f"{c.label} ({c.key})", id=f"choice-{c.value}", variant=c.variant, compact=True)

    def on_mount(self) -> None:
        # Enter takes the safe answer: the primary one (new name, save), else the last (cancel);
        # never the destructive one by default.
        pick = next((c for c in self.choices if c.variant == "primary"), self.choices[-1])
        self.query_one(f"#choice-{pick.value}", Button).focus()

    def action_key(self, key: str) -> None:
        for c in self.choices:
            if c.key == key:
                self.dismiss(c.value)
                return

    def action_pick(self, value: str) -> None:
        self.dismiss(self.cancel_value if value == "cancel" else value)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id.removeprefix("choice-"))


class PathScreen(ModalScreen[str | None]):
    """Ask for a file name (Enter keeps it, Escape cancels: dismissed with None)."""

    DEFAULT_CSS = """
    PathScreen { align: center middle; }
    PathScreen > Vertical { width: 70; max-width: 95%; height: auto; border: round $accent;
                            background: $surface; padding: 0 1; }
    PathScreen .choice-title { text-style: bold; color: $accent; }
    PathScreen .choice-text { margin: 1 0 0 0; }
    PathScreen Input { margin: 1 0; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="path-cancel")]

    def __init__(self, title: str, question: str, value: str):
        super().__init__()
        self.title_text, self.question, self.value = title, question, value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, classes="choice-title", markup=False)
            yield Static(self.question, classes="choice-text", markup=False)
            field = Input(self.value, id="path-input", compact=True, select_on_focus=False)
            field.field_label = "File"  # type: ignore[attr-defined]
            yield field

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


def overwrite_choices() -> list[Choice]:
    # The question names the new file; the buttons stay short so all three fit at 80 columns.
    return [Choice("overwrite", "Overwrite", "o", "error"),
            Choice("new", "New name", "n", "primary"),
            Choice("cancel", "Cancel", "c")]
