"""The generation settings panel: temperature, top-p, top-k, repetition penalty, max tokens, seed, system.

The fields, their labels and tooltips come from ``tuitune.generation.settings``, the settings'
one declaration; each is validated by ``GenerationSettings`` as it changes; a bad
value shows its one-line error under the fields and the last good settings stay in use.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Select, Static

from screens.widgets.controls import NumberInput
from tuitune.generation.settings import PANEL_FIELDS, GenerationSettings, info
from tuitune.errors import TuituneError
from tuitune.templates import TEMPLATE_NAMES

# (field, label, input kind, tooltip): from the settings' one declaration.
FIELDS = tuple((name, info(name)["label"], info(name)["kind"], info(name)["description"]) for name in PANEL_FIELDS)


def _shown(value) -> str:
    if value is None:
        return "random"
    return str(value)


class ChatSettings(VerticalScroll):
    """A column of labelled fields; posts :class:`Changed` with valid settings."""

    DEFAULT_CSS = """
    /* 27 columns inside: the default transcript file, data/chat-transcripts.jsonl, reads whole. */
    ChatSettings { width: 29; height: 1fr; padding: 0 0 0 1; border-left: solid $primary-darken-2; }
    ChatSettings .chat-set-row { height: 1; margin: 0 0 1 0; }
    ChatSettings .chat-set-row > Label { width: 13; color: $text-muted; }
    ChatSettings .chat-set-row > Input { width: 1fr; }
    ChatSettings > Label { color: $text-muted; }
    ChatSettings > Input, ChatSettings > Select { width: 100%; margin: 0 0 1 0; }
    ChatSettings > #chat-settings-error { color: $error; height: auto; }
    """

    @dataclass
    class Changed(Message):
        settings: GenerationSettings

    @dataclass
    class TemplateChanged(Message):
        template: str | None  # None: the run's template, else the tokenizer's own (auto)

    def __init__(self, settings: GenerationSettings | None = None, save_path: str = "", **kwargs):
        super().__init__(**kwargs)
        self.settings = settings or GenerationSettings()
        self._save_path = save_path

    def compose(self) -> ComposeResult:
        for name, label, kind, tip in FIELDS:
            value, wid = _shown(getattr(self.settings, name)), f"chat-set-{name.replace('_', '-')}"
            if kind not in ("number", "integer"):
                field = Input(value, id=wid, compact=True, tooltip=tip, select_on_focus=False)
            else:  # numbers only: no `_`, no letters
                field = NumberInput(value, kind=kind, id=wid, compact=True, tooltip=tip, select_on_focus=False)
            if name == "system":  # wide: its label above it
                yield Label(label)
                yield field
            else:
                with Horizontal(classes="chat-set-row"):
                    yield Label(label)
                    yield field
        yield Label("template")
        yield Select([("the model's / run's", "__default__"), *[(n, n) for n in TEMPLATE_NAMES]],
                     value="__default__", allow_blank=False, id="chat-template", compact=True,
                     tooltip="The prompt template: the run's (or the tokenizer's own chat template), or a "
                     "named one, for a model without a chat template or trained with another.")
        yield Label("save transcript to")
        yield Input(self._save_path, id="chat-save-path", compact=True,
                    tooltip="ctrl+s appends the conversation here as one JSONL record in tuitune's data "
                    "format (relative to the workspace), ready to become training data.")
        yield Static("", id="chat-settings-error")

    @property
    def template(self) -> str | None:
        value = self.query_one("#chat-template", Select).value
        return None if value == "__default__" else value

    @on(Select.Changed, "#chat-template")
    def _template_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.post_message(self.TemplateChanged(self.template))

    @property
    def save_path(self) -> str:
        return self.query_one("#chat-save-path", Input).value.strip()

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        if event.input.id == "chat-save-path":
            return
        event.stop()
        settings = self.settings
        error = ""
        for name, *_ in FIELDS:
            value = self.query_one(f"#chat-set-{name.replace('_', '-')}", Input).value
            try:
                settings = settings.updated(name, value)
            except TuituneError as exc:
                error = str(exc)
                break
        self.query_one("#chat-settings-error", Static).update(Text(error))
        if not error and settings != self.settings:
            self.settings = settings
            self.post_message(self.Changed(settings))


def _labels() -> dict[str, str]:
    """The Chat step's words for the engine's fields (an error names its field by these): the
    settings' labels from their one declaration, and the model field's forms."""
    from tuitune.generation.settings import FIELDS, info

    labels = {"template": "the template setting", "adapter": "an adapter folder in the model field",
              "checkpoint": "RUN:checkpoint-N in the model field", "bits": "4/8-bit loading"}
    for name in FIELDS:
        label = info(name)["label"]
        labels[name] = f"the {label} setting" if name in ("system", "seed") else label
    return labels


#: field -> the Chat step's label for it (``screens.workers.failure``, ``tuitune.errors.said``).
LABELS = _labels()
