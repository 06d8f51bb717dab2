"""The tokenized view: trained text highlighted, masked text dim, newlines visible."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


def spans_text(spans: list[tuple[str, bool]]) -> Text:
    t = Text()
    for text, trained in spans:
        t.append(text.replace("\n", "↵\n"), style="bold green underline" if trained else "dim")
    return t


class TokenView(Static):
    """Shows one encoded record: trained (labels = ids) in green, masked (-100) dim."""

    DEFAULT_CSS = "TokenView { height: auto; }"

    def show(self, spans: list[tuple[str, bool]]) -> None:
        legend = Text.assemble(("trained", "bold green underline"), " = the model learns these tokens; ",
                               ("masked", "dim"), " = context only (-100); ↵ = newline\n\n")
        self.update(legend + spans_text(spans))
