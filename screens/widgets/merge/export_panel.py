"""The Merge step's Export dialog: format (from the export registry), tensor type, output, and
whether the GGUF is run in llama.cpp against tuitune chat (``export --check-runtime``)."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from screens.widgets.controls import Toggle
from tuitune.export import DEFAULT_FORMAT, FORMATS, OUTTYPES

#: The check's control label: how the screen names the engine's field ``check_runtime``.
CHECK_LABEL = "run in llama.cpp"


@dataclass
class ExportRequest:
    fmt: str
    outtype: str
    out: str
    check_runtime: bool = False


def default_output(stem: str, fmt: str, outtype: str) -> str:
    """Where the format's output goes by default: under the workspace's models/."""
    return f"models/{FORMATS[fmt].default_output(stem, outtype)}"


class ExportModal(ModalScreen[ExportRequest | None]):
    """Pick the format, the type and the output; Enter (or Export) starts it."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="merge-export-cancel")]
    DEFAULT_CSS = """
    ExportModal { align: center middle; }
    ExportModal > Vertical { width: 72; max-width: 100%; height: auto; border: round $primary; padding: 0 1;
                             background: $surface; }
    ExportModal .form-row { height: 1; margin: 0 0 1 0; }
    ExportModal .field-label { width: 8; }
    ExportModal Select { width: 16; margin-right: 2; }
    ExportModal #export-out { width: 1fr; }
    ExportModal #export-buttons { height: auto; align-horizontal: right; }
    """

    def __init__(self, what: str, stem: str):
        super().__init__()
        self.what, self.stem = what, stem

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"Export {self.what}", classes="section-title")
            yield Static("llama.cpp's converter writes the GGUF; it is read back and checked. An adapter is "
                         "merged first (streamed, verified).", classes="dim")
            with Horizontal(classes="form-row"):
                yield Label("format", classes="field-label")
                yield Select([(f, f) for f in FORMATS], value=DEFAULT_FORMAT, allow_blank=False,
                             id="export-format", compact=True,
                             tooltip="\n".join(f"{f.name}: {f.description}" for f in FORMATS.values()))
                yield Label("type", classes="field-label")
                yield Select([(t, t) for t in OUTTYPES], value="f16", allow_blank=False, id="export-type",
                             compact=True, tooltip="The GGUF's tensor type: f16, bf16, or q8_0 (about half the size).")
            with Horizontal(classes="form-row"):
                yield Label("output", classes="field-label")
                yield Input(default_output(self.stem, DEFAULT_FORMAT, "f16"), id="export-out", compact=True,
                            tooltip="The output, relative to the workspace: " + "; ".join(
                                f"{f.name}: a {f.kind}" for f in FORMATS.values()))
            with Horizontal(classes="form-row"):
                yield Label("check", classes="field-label")
                yield Toggle(CHECK_LABEL, False, id="export-check-runtime", compact=True,
                             tooltip="After the checks, load the GGUF with llama.cpp, render prompts with its own "
                             "chat template and compare the greedy answers with tuitune chat's (fp32) on 5 "
                             "prompts. Needs llama-cpp-python: pip install 'tuitune[runtime]'.")
            with Horizontal(id="export-buttons"):
                yield Button("Export", id="export-go", variant="primary", compact=True)
                yield Button("Cancel", id="export-cancel", compact=True)

    @on(Select.Changed)
    def _follow(self, event: Select.Changed) -> None:
        out = self.query_one("#export-out", Input)
        fmt, typ = self.query_one("#export-format", Select).value, self.query_one("#export-type", Select).value
        self.query_one("#export-type", Select).disabled = not FORMATS[str(fmt)].gguf   # --type is the GGUF's
        self.query_one("#export-check-runtime", Toggle).disabled = not FORMATS[str(fmt)].gguf
        if out.value in {default_output(self.stem, f, t) for f in FORMATS for t in OUTTYPES}:
            out.value = default_output(self.stem, str(fmt), str(typ))

    @on(Input.Submitted, "#export-out")
    @on(Button.Pressed, "#export-go")
    def _go(self) -> None:
        out = self.query_one("#export-out", Input).value.strip()
        if out:
            check = self.query_one("#export-check-runtime", Toggle)
            self.dismiss(ExportRequest(str(self.query_one("#export-format", Select).value),
                                       str(self.query_one("#export-type", Select).value), out,
                                       check.value and not check.disabled))

    @on(Button.Pressed, "#export-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


__all__ = ["ExportModal", "ExportRequest", "default_output", "CHECK_LABEL"]
