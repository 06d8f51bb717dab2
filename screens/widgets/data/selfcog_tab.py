"""The Data step's Self-cognition tab: who-are-you records that teach the model its name."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import Button, Input, Static

from screens.widgets.data.tab_form import DataForm, field_row
from screens.widgets.controls import NumberInput
from tuitune.errors import TuituneError
from tuitune.fsutil import next_free_path

DEFAULT_SELFCOG = "data/self_cognition.jsonl"


class SelfCogForm(DataForm):
    TAB, RUN = "selfcog", "sc-run"
    TIPS = {
        "sc-name": "The name: answers say 'I am <name>'s assistant' / '我是<name>的小助手'.",
        "sc-count": "How many distinct question/answer records to write (no two alike).",
        "sc-seed": "The seed for the mix of phrasings.",
        "sc-out": "Output file, relative to the workspace.",
    }

    def compose(self) -> ComposeResult:
        yield field_row("Name", Input(placeholder="the name the assistant answers with", id="sc-name", compact=True))
        yield field_row("Count", NumberInput("150", id="sc-count", compact=True))
        yield field_row("Seed", NumberInput("0", id="sc-seed", compact=True))
        yield field_row("Output", Input(self.free(DEFAULT_SELFCOG), id="sc-out", compact=True))
        yield Button("Generate", id="sc-run", variant="primary", compact=True)
        yield Static("", id="selfcog-result")

    def run(self) -> None:
        from tuitune.data.selfcog import MAX_RECORDS

        try:
            name = self.value("sc-name")
            if not name:
                raise TuituneError("Name: give the name the assistant answers with")
            count = self.whole("sc-count", "Count", 1)
            if count > MAX_RECORDS:
                raise TuituneError(f"Count {count}: the phrasings make only {MAX_RECORDS} distinct records; "
                                   f"ask for {MAX_RECORDS} or fewer")
            seed = self.whole("sc-seed", "Seed")
            out = self.value("sc-out") or DEFAULT_SELFCOG
        except TuituneError as exc:
            self.say(str(exc), error=True)
            return
        target = self.path_of(out)

        def go(fresh: Path | None) -> None:
            if fresh is not None:
                self.set_value("sc-out", self.rel(fresh))
            self.run_selfcog(name, count, seed, fresh or target)

        self.confirm_write([target], next_free_path(target), go)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-selfcog", name="selfcog",
          description="generating")
    def run_selfcog(self, name: str, count: int, seed: int, out: Path):
        from tuitune.data.selfcog import write_self_cognition

        return name, write_self_cognition(out, name, count, seed), out

    def show_result(self, res) -> None:
        name, n, out = res
        self.say(Text(f"wrote {n} records for {name!r} → {self.rel(out)}", style="bold"))
        self.post_message(self.Written(self.TAB, out))
