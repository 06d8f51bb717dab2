"""The Data step's Split tab: a seeded train/test split, optionally keeping each question on one side."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import Button, Input, Static

from screens.widgets.data.tab_form import DataForm, field_row, words
from screens.widgets.controls import NumberInput, Toggle
from tuitune.errors import TuituneError
from tuitune.fsutil import next_free_path


class SplitForm(DataForm):
    """``use`` fills in a file to split (and its folder); ``run`` writes train.jsonl and test.jsonl."""

    TAB, RUN = "split", "split-run"
    TIPS = {
        "split-file": "A conversation file (.jsonl or .json) to split.",
        "split-ratio": "Share of records for the test set, e.g. 0.3.",
        "split-seed": "The shuffle seed: the same seed writes the same files.",
        "split-group": "Keep every record with the same question on one side, so test questions are unseen.",
        "split-out": "Folder for train.jsonl and test.jsonl.",
    }

    def compose(self) -> ComposeResult:
        yield field_row("File", Input(placeholder="data/converted.jsonl", id="split-file", compact=True))
        yield field_row("Test ratio", NumberInput("0.3", id="split-ratio", compact=True, kind="number"))
        yield field_row("Seed", NumberInput("42", id="split-seed", compact=True))
        yield field_row("Group", Toggle("keep each question on one side (group by input)", value=True,
                                        id="split-group", compact=True))
        yield field_row("Folder", Input(placeholder="data", id="split-out", compact=True))
        yield Button("Split", id="split-run", variant="primary", compact=True)
        yield Static("", id="split-result")

    def use(self, path: Path, folder: Path | None = None) -> None:
        """Split ``path`` next (into ``folder``, if given)."""
        self.set_value("split-file", self.rel(path))
        if folder is not None:
            self.set_value("split-out", self.rel(folder))

    def run(self) -> None:
        try:
            src = self.value("split-file")
            if not src:
                raise TuituneError("give the conversation file to split")
            try:
                ratio = float(self.value("split-ratio"))
            except ValueError:
                raise TuituneError(f"Test ratio {self.value('split-ratio')!r} is not a number (e.g. 0.3)") from None
            if not 0 < ratio < 1:
                raise TuituneError(f"Test ratio {ratio:g}: must be between 0 and 1 (e.g. 0.3)")
            seed = self.whole("split-seed", "Seed")
        except TuituneError as exc:
            self.say(str(exc), error=True)
            return
        group = "input" if self.query_one("#split-group", Toggle).value else None
        out = self.value("split-out")
        source = self.path_of(src)
        folder = self.path_of(out) if out else source.parent

        def go(fresh: Path | None) -> None:
            if fresh is not None:
                self.set_value("split-out", self.rel(fresh))
            self.say("Splitting …")
            self.run_split(source, fresh or folder, ratio, seed, group)

        targets = [folder / "train.jsonl", folder / "test.jsonl"]
        self.confirm_write(targets, next_free_path(folder / f"{source.stem}-split"), go)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-split", name="split", description="splitting")
    def run_split(self, src: Path, out: Path | None, ratio: float, seed: int, group: str | None):
        from tuitune.data.split import split_file

        return split_file(src, out, ratio, seed, group)

    def show_result(self, res) -> None:
        lines = [words(self.TAB, l).replace(str(self.workspace.root) + "/", "") for l in res.lines()]
        self.say(Text("\n".join(lines), style="bold"))
        self.post_message(self.Written(self.TAB, Path(res.train_path)))
