"""The Data step's Tokens tab: token-length statistics of a conversation file, and one record
as the model sees it (trained text highlighted, masked text dim, newlines visible)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Button, Input, Label, Select, Static

from screens.widgets.data.tab_form import DataForm, field_row
from screens.widgets.controls import NumberInput
from tuitune.errors import TuituneError
from tuitune.templates import TEMPLATE_NAMES  # light: no transformers at import


def spans_text(spans: list[tuple[str, bool]]) -> Text:
    t = Text()
    for text, trained in spans:
        t.append(text.replace("\n", "↵\n"), style="bold green underline" if trained else "dim")
    return t


class TokenView(Static):
    """Shows one encoded record: trained (labels = ids) in green, masked (-100) dim."""

    DEFAULT_CSS = "TokenView { height: auto; }"

    def show(self, spans: list[tuple[str, bool]], rejected: list[tuple[str, bool]] | None = None) -> None:
        legend = Text.assemble(("trained", "bold green underline"), " = the model learns these tokens; ",
                               ("masked", "dim"), " = context only (-100); ↵ = newline\n")
        if rejected is None:
            self.update(legend + "\n" + spans_text(spans))
            return
        # A preference pair: the same prompt, then each answer, side by side.
        from rich.console import Group
        from rich.table import Table

        table = Table(expand=True, show_lines=False, box=None, padding=(0, 1))
        table.add_column("chosen", ratio=1, style="")
        table.add_column("rejected", ratio=1)
        table.add_row(spans_text(spans), spans_text(rejected))
        self.update(Group(legend, table))


class TokensForm(DataForm):
    """``use`` fills in the file to inspect; ``run`` measures it and shows one record.

    A tokenizer, once loaded, is kept for the next run (loading it is the slow part).
    """

    TAB, RUN = "tokens", "tok-run"
    TIPS = {
        "tok-file": "A conversation file (or preference pairs: chosen and rejected side by side) to validate "
                    "and measure; or a mix, as data.train takes it: a.jsonl; b.jsonl weight=2 max_records=500.",
        "tok-model": "A model folder with tokenizer files (e.g. models/tiny-chat).",
        "tok-template": "auto = the tokenizer's own chat template; or an XTuner template by name.",
        "tok-maxlen": "Records longer than this many tokens are truncated in training.",
        "tok-record": "Which record to show (1 = the first).",
    }

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._tokenizers: dict[str, object] = {}

    def compose(self) -> ComposeResult:
        yield field_row("File", Input(placeholder="data/converted.jsonl", id="tok-file", compact=True))
        yield field_row("Model", Input(self._default_model(), placeholder="models/<name>", id="tok-model",
                                       compact=True))
        with Horizontal(classes="field"):
            yield Label("Template", classes="field-label")
            yield Select([(n, n) for n in TEMPLATE_NAMES], value="auto", id="tok-template", compact=True,
                         allow_blank=False)
            yield Label(" Max len", classes="field-label short")
            yield NumberInput("2048", id="tok-maxlen", compact=True)
            yield Label(" Record", classes="field-label short")
            yield NumberInput("1", id="tok-record", compact=True)
        yield Button("Show tokens", id="tok-run", variant="primary", compact=True)
        yield Static("", id="tokens-result")
        yield TokenView("", id="tok-view")

    def _default_model(self) -> str:
        """The first model folder in the workspace with a tokenizer, or nothing."""
        found = self.workspace.tokenizer_dirs()
        return self.rel(found[0]) if found else ""

    def use(self, path: Path) -> None:
        """Inspect ``path`` next."""
        self.set_value("tok-file", self.rel(path))

    def run(self) -> None:
        try:
            f, m = self.value("tok-file"), self.value("tok-model")
            if not f or not m:
                raise TuituneError("give a conversation file and a model folder")
            maxlen = self.whole("tok-maxlen", "Max len", 1)
            rec = self.whole("tok-record", "Record", 1)
        except TuituneError as exc:
            self.say(str(exc), error=True)
            return
        self.say("Tokenizing … (the first time loads the tokenizer)")
        if ";" in f or len(f.split()) > 1:   # a mix: a.jsonl; b.jsonl weight=2 (as data.train takes it)
            self.run_mix(f, self.path_of(m), self.select("tok-template"), maxlen)
            return
        self.run_tokens(self.path_of(f), self.path_of(m), self.select("tok-template"), maxlen, rec)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-tokens", name="mix",
          description="tokenizing the mix")
    def run_mix(self, text: str, model: Path, template: str, maxlen: int):
        from tuitune.config.fields import parse_mix
        from tuitune.data.inspect import guess_task, load_tokenizer
        from tuitune.data.io import iter_records
        from tuitune.train.build import describe_mix

        try:
            train = parse_mix(text)
        except ValueError as exc:
            raise TuituneError(f"File: {exc}; write files as a.jsonl; b.jsonl weight=2 max_records=500") from None
        from tuitune.config import RunConfig

        first = (train if isinstance(train, str) else
                 (train[0] if isinstance(train[0], str) else train[0]["path"]))
        head = [rec for _, (_where, rec) in zip(range(1), iter_records(self.path_of(first)))]
        cfg = RunConfig.model_validate({"model": str(model), "template": template, "task": guess_task(head),
                                        "data": {"train": train, "max_length": maxlen, "pack": False}})
        cfg.with_context(workspace=self.workspace.root)
        key = str(model.resolve())
        if key not in self._tokenizers:
            self._tokenizers[key] = load_tokenizer(model)
        return describe_mix(cfg, self._tokenizers[key])

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-tokens", name="tokens",
          description="tokenizing")
    def run_tokens(self, f: Path, model: Path, template: str, maxlen: int, record: int):
        from tuitune.data.inspect import inspect_file, load_tokenizer

        key = str(model.resolve())
        if key not in self._tokenizers:
            self._tokenizers[key] = load_tokenizer(model)
        return inspect_file(f, model, template, maxlen, record, tokenizer=self._tokenizers[key])

    def show_result(self, res) -> None:
        if isinstance(res, list):   # a mix's rows
            self.say(Text("\n".join(["the mix, as a run takes it (records per file after weight and max_records):"]
                                    + [r.line() for r in res])))
            self.query_one(TokenView).update("")
            return
        self.say(Text("\n".join(res.lines()[1:]) + f"\nrecord {res.record} ({res.record_where}): "
                      f"{res.record_tokens} tokens, {res.record_trained} trained"))
        self.query_one(TokenView).show(res.spans, res.rejected_spans)
