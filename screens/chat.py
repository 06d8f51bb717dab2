"""Step 6, Chat: talk to a model, an adapter, a run or a checkpoint; compare two side by side.

Layer twin: ``tuitune/commands/chat.py`` is the same step's CLI verb (one name, two layers).

All logic lives in ``tuitune.chat`` (headless). This screen gathers input and runs the
engine in thread workers: one loads (with a progress line; loading frees the models
loaded before), one generates and posts the answer's pieces as they stream, coalesced to
a few updates a second. Compare mode sends one prompt to two models, which answer
together (token by token in turn) with the same settings and seed; when both sit on one
base (base vs run, two checkpoints) the base is loaded once. torch is imported only
inside the workers. Arriving puts the focus nowhere, never in a text field.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label, LoadingIndicator, Static
from textual.worker import Worker, get_current_worker

from screens.base import StepScreen
from screens.workers import failure
from screens.widgets.chat.columns import ChatColumns
from screens.widgets.chat.input import ChatInput
from screens.widgets.chat.settings_panel import LABELS, ChatSettings
from screens.widgets.chat.transcript import ChatTranscript
from tuitune.generation.settings import GenerationSettings

DEFAULT_SAVE = "data/chat-transcripts.jsonl"


class ChatScreen(StepScreen):
    STEP = "chat"
    HELP = """\
# Chat

Talk to a model in the terminal. The **model** field takes a model folder, an adapter
folder, a run id (its adapter on its base; a run still training: its newest checkpoint),
`RUN:checkpoint-N` or `RUN:base`. **Enter** in the field (or **ctrl+l**) loads it; once
another model has loaded, the one before is freed (a load that fails keeps it).

**i** (or **Enter**) puts the cursor in the message box; **Esc** takes it out again, so the
number keys switch steps. Type and press **Enter** to send; **ctrl+j** starts a new line;
**Esc** stops an answer: what it wrote so far stays, marked *stopped*. Answers stream in;
the view follows them while you are at the bottom and stays put when you scroll up.

**Compare** (**ctrl+t**) sends each prompt to two models with the same settings and seed,
side by side: a run's base and the run, or two checkpoints of a run (even while it
trains). Both answer at once, token by token in turn; **Esc** stops both where they are.
With a run in the first field, switching compare on fills in `RUN:base` vs `RUN`.

The settings panel (**ctrl+b** shows or hides it) holds temperature (0 is greedy), top-p,
top-k, repetition penalty, max tokens, the seed (set before every answer: the same
seed, settings, model and prompt give the same answer) and the system prompt.
**ctrl+s** appends the conversation to the file named there as JSONL in tuitune's data
format, so good answers can become training data.

The same from a shell: `tuitune chat MODEL [--adapter A] [--prompt TEXT]`.
"""

    # On arrival nothing has the focus (no text field): number keys switch steps, q quits, and
    # Tab goes to the model field first.
    AUTO_FOCUS = ""

    BINDINGS = [
        # Load is not in the footer (Enter in a model field loads; with Stop the footer would be
        # wider than 80 columns); F1 help and the palette list it.
        # Shown (and taking Esc) only while an answer is being written; otherwise Esc leaves the field.
        Binding("escape", "stop", "Stop", id="chat-stop", tooltip="Stop the answers being written"),
        # i (or Enter where nothing else takes it) goes to the message box; the footer says so.
        Binding("i,enter", "focus_message", "Message", id="chat-message",
                tooltip="Put the cursor in the message box (Esc takes it out)"),
        Binding("ctrl+r", "reset", "Reset", id="chat-reset", tooltip="Forget the conversation"),
        Binding("ctrl+s", "save", "Save", id="chat-save", tooltip="Append the conversation to the transcript file"),
        Binding("ctrl+t", "compare", "Compare", id="chat-compare", tooltip="Two models side by side"),
        Binding("ctrl+l", "load", "Load", id="chat-load", show=False, tooltip="Load the model(s) named above"),
        Binding("ctrl+b", "toggle_settings", "Settings", id="chat-settings-toggle"),
    ]

    #: Palette entries for what has no key of the screen's own (Enter sends in the prompt box).
    ACTIONS = [("Send the message", "send_message", "Send what is typed in the prompt box (Enter there)")]

    # --- messages from the workers --------------------------------------------------------------

    @dataclass
    class LoadProgress(Message):
        text: str

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, ChatScreen.LoadProgress)

    @dataclass
    class Loaded(Message):
        sessions: list
        notes: list[str]
        seconds: float

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sessions: list = []
        self.settings = GenerationSettings()
        self.compare_mode = False
        self.generating = False
        # Not ``loading``: that name is Textual's own (a reactive that veils the whole screen).
        self.loading_models = False
        self._focus_before = None
        self.template: str | None = None

    # --- layout --------------------------------------------------------------------------------

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="chat-models"):
            yield Label("model", classes="field-label")
            yield Input(self.workspace.first_model(), id="chat-model", compact=True,
                        placeholder="model folder, run id, RUN:checkpoint-N or RUN:base",
                        tooltip="A model folder (config.json), an adapter folder, a run id (its adapter on "
                        "its base), RUN:checkpoint-N or RUN:base. Enter loads it.")
            yield Label("vs", classes="field-label", id="chat-vs")
            yield Input("", id="chat-model-b", compact=True, placeholder="second model to compare",
                        tooltip="The second model of compare mode (same forms as the first). Enter loads both.")
        with Horizontal(id="chat-status-row"):
            yield LoadingIndicator(id="chat-loading")
            yield Static(Text("No model loaded: press Enter in the model field (or ctrl+l) to load it.",
                              style="dim"), id="chat-status")
        with Horizontal(id="chat-main"):
            yield ChatColumns(LABELS, id="chat-columns")
            yield ChatSettings(self.settings, DEFAULT_SAVE, id="chat-settings")
        yield ChatInput(id="chat-input", placeholder="Message (Enter sends, ctrl+j new line)")

    def on_mount(self) -> None:
        self.query_one("#chat-loading").display = False
        self._show_compare(False)
        self._take_handover()

    def action_focus_message(self) -> None:
        self.query_one("#chat-input", ChatInput).focus()

    def on_screen_resume(self) -> None:
        if self.is_mounted:
            self._take_handover()

    def _take_handover(self) -> None:
        """A model from Merge, a run from Train, or a record from Evaluate (baseline, target,
        prompt): load it (both, side by side)."""
        handed = self.take_handover()
        if handed is None:
            return
        if handed.kind == "pair":
            baseline, target, prompt = handed.value
            if not self.compare_mode:
                self._show_compare(True)
            self.query_one("#chat-model", Input).value = baseline
            self.query_one("#chat-model-b", Input).value = target
            self.query_one("#chat-input", ChatInput).text = prompt
            self.action_load()
            return
        wanted = handed.value
        field = self.query_one("#chat-model", Input)
        if field.value == wanted and self.sessions:
            return
        field.value = wanted
        self.action_load()

    # --- status line ---------------------------------------------------------------------------

    def _status(self, text: str | Text, style: str = "") -> None:
        self.query_one("#chat-status", Static).update(text if isinstance(text, Text) else Text(text, style=style))

    def _describe(self) -> Text:
        out = Text()
        for i, s in enumerate(self.sessions):
            if i:
                out.append("   vs   ", style="dim")
            if len(self.sessions) > 1:
                out.append(f"{'AB'[i]}: ", style="bold")
            out.append(s.describe())
        return out

    # --- loading -------------------------------------------------------------------------------

    def action_load(self) -> None:
        a = self.query_one("#chat-model", Input).value.strip()
        b = self.query_one("#chat-model-b", Input).value.strip() if self.compare_mode else ""
        if not a:
            self._status("Type a model folder, a run id or RUN:checkpoint-N in the model field.", "bold red")
            self.query_one("#chat-model", Input).focus()
            return
        if self.compare_mode and not b:
            self._status("Compare mode: type the second model in the field after 'vs'.", "bold red")
            self.query_one("#chat-model-b", Input).focus()
            return
        self.action_stop()
        # The loaded model(s) stay until the new ones have loaded: a failed load changes nothing.
        self.loading_models = True
        self._focus_before = self.focused
        self.template = self.query_one(ChatSettings).template
        self.query_one("#chat-loading").display = True
        for field in ("#chat-model", "#chat-model-b"):
            self.query_one(field, Input).remove_class("-load-failed")
        self._status(f"Loading {a}{' and ' + b if b else ''}…", "dim")
        self.load_models(a, b or None)

    @on(Input.Submitted, "#chat-model, #chat-model-b")
    def _model_submitted(self) -> None:
        self.action_load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="chat-load", description="load the chat model")
    def load_models(self, a: str, b: str | None) -> None:
        from tuitune.chat import ChatSession, load_pair
        from tuitune.sources import resolve

        t0 = time.perf_counter()
        ws = self.app.workspace.root
        progress = lambda text: self.post_message(self.LoadProgress(text))  # noqa: E731
        src_a = resolve(a, ws)
        if b:
            src_b = resolve(b, ws)
            sessions = list(load_pair(src_a, src_b, settings=self.settings, template=self.template,
                                      progress=progress))
        else:
            sessions = [ChatSession(self.settings).load(src_a, template=self.template, progress=progress)]
        if get_current_worker().is_cancelled:  # a newer load took over: this one is not wanted
            for s in sessions:
                s.unload()
            return
        notes = [n for src in ([src_a, src_b] if b else [src_a]) for n in src.notes]
        self.post_message(self.Loaded(sessions, notes, time.perf_counter() - t0))

    @work(thread=True, exit_on_error=False, group="chat-unload", description="free the models loaded before")
    def unload_models(self, old: list) -> None:
        for s in old:
            s.unload()

    def on_chat_screen_load_progress(self, message: LoadProgress) -> None:
        if self.loading_models:
            self._status(f"{message.text}…", "dim")

    async def on_chat_screen_loaded(self, message: Loaded) -> None:
        self.loading_models = False
        old, self.sessions = self.sessions, message.sessions
        if old:
            self.unload_models(old)  # the new model(s) are in: free the ones before
        self.query_one("#chat-loading").display = False
        status = self._describe()
        for note in message.notes:
            status.append(f"\nnote: {note}", style="yellow")
        self._status(status)
        for i, s in enumerate(self.sessions):
            await self._column(i).clear()
            self.columns.set_title(i, f"{'AB'[i]}: {s.source.label}")
        # Typed in a model field (Enter there): on to the message box. A load that came from
        # another step (a hand-over) leaves the focus where it is, out of the text fields.
        if isinstance(self._focus_before, Input) and self._focus_before.id in ("chat-model", "chat-model-b"):
            self.query_one("#chat-input", ChatInput).focus()

    @on(Worker.StateChanged)
    async def _worker_changed(self, event: Worker.StateChanged) -> None:
        error = failure(event, LABELS)
        if error is None:
            return
        if event.worker.group == "chat-load":
            self.loading_models = False
            self.query_one("#chat-loading").display = False
            # Right under the field the user typed in, which keeps the focus; the model loaded
            # before (if any) is still the one answering.
            status = Text(f"Could not load: {error}", style="bold red")
            if self.sessions:
                status.append("\nstill loaded: ", style="dim").append(self._describe())
            self._status(status)
            for field in ("#chat-model", "#chat-model-b"):
                w = self.query_one(field, Input)
                if w.display:
                    w.add_class("-load-failed")
            before = self._focus_before
            if before is not None and before.is_attached and self.focused is not before:
                self.set_focus(before)

    # --- chatting ------------------------------------------------------------------------------

    @property
    def columns(self) -> ChatColumns:
        return self.query_one(ChatColumns)

    def _column(self, side: int) -> ChatTranscript:
        return self.columns.column(side)

    @on(ChatInput.Submitted, "#chat-input")
    async def _send(self, message: ChatInput.Submitted) -> None:
        await self.send(message.text)

    def action_send_message(self) -> None:
        self.query_one("#chat-input", ChatInput).action_submit()

    async def send(self, prompt: str) -> None:
        """Send ``prompt`` to the loaded model(s); the answers stream into the transcript(s)."""
        if self.loading_models:
            self._status("Still loading; send again once the model is ready.", "yellow")
            return
        if not self.sessions:
            self._status("Load a model first: Enter in the model field (or ctrl+l).", "bold red")
            self.query_one("#chat-input", ChatInput).text = prompt
            return
        if self.generating:
            self._status("Still answering: esc stops it.", "yellow")
            self.query_one("#chat-input", ChatInput).text = prompt
            return
        for s in self.sessions:
            s.settings = self.settings
        await self.columns.add_user(prompt, len(self.sessions))
        self.generating = True
        self.refresh_bindings()
        self.columns.timings = getattr(self.app, "chat_timings", True)
        self.columns.answer(prompt, list(self.sessions))

    def on_chat_columns_over(self) -> None:
        self.generating = False
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "stop":
            return self.generating
        if action == "save":  # not while answering: the footer needs its room for Stop (80 columns)
            return not self.generating
        return True

    def action_stop(self) -> None:
        """Stop every answer being written (both, in compare mode); what they wrote stays, marked stopped."""
        if not self.generating:
            return
        self.columns.stop()
        self._status(Text("Stopped.", style="yellow") + Text("  ") + self._describe())

    async def action_reset(self) -> None:
        self.action_stop()
        for s in self.sessions:
            s.reset()
        await self.columns.clear()
        self._status(Text("Conversation reset.  ", style="dim") + self._describe())

    def action_save(self) -> None:
        from tuitune.chat import save_conversations
        from tuitune.errors import TuituneError

        raw = self.query_one(ChatSettings).save_path or DEFAULT_SAVE  # not while answering: check_action
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = self.app.workspace.root / path
        try:
            save_conversations(path, self.sessions)
        except TuituneError as exc:
            self._status(f"Not saved: {exc}", "bold red")
            return
        n = len(self.sessions)
        self._status(Text(f"Saved {n} conversation{'s' if n > 1 else ''} to {raw}.", style="green"))

    # --- compare mode & panels -----------------------------------------------------------------

    def _show_compare(self, on: bool) -> None:
        self.compare_mode = on
        for sel in ("#chat-vs", "#chat-model-b", "#chat-col-b", "#chat-title-a"):
            self.query_one(sel).display = on
        # Two columns need the width: the settings panel steps aside (ctrl+b brings it back).
        self.query_one(ChatSettings).display = not on
        self.set_class(on, "-compare")

    def action_compare(self) -> None:
        on = not self.compare_mode
        self._show_compare(on)
        if not on:
            if len(self.sessions) > 1:
                # Keep the first model; the second is dropped (its memory goes with it).
                self.sessions[1].unload()
                self.sessions = self.sessions[:1]
                self.columns.set_title(0, f"A: {self.sessions[0].source.label}")
                self._status(self._describe())
            return
        a_field = self.query_one("#chat-model", Input)
        b_field = self.query_one("#chat-model-b", Input)
        if not b_field.value.strip():
            a = a_field.value.strip()
            run = self._run_of(a)
            if run and not a.endswith(":base"):
                a_field.value, b_field.value = f"{run}:base", a
            else:
                b_field.focus()
                self._status("Compare mode: type the second model after 'vs' and press Enter.", "dim")
                return
        self.action_load()

    def _run_of(self, spec: str) -> str | None:
        """The run a spec names (RUN, RUN:checkpoint-N), without loading anything."""
        from tuitune.sources import resolve
        from tuitune.errors import TuituneError

        if not spec:
            return None
        try:
            return resolve(spec, self.app.workspace.root).run
        except TuituneError:
            return None

    def action_toggle_settings(self) -> None:
        panel = self.query_one(ChatSettings)
        panel.display = not panel.display

    @on(ChatSettings.Changed)
    def _settings_changed(self, message: ChatSettings.Changed) -> None:
        self.settings = message.settings

    @on(ChatSettings.TemplateChanged)
    def _template_changed(self, message: ChatSettings.TemplateChanged) -> None:
        """A new template applies from the next answer on (no reload needed)."""
        from tuitune.errors import TuituneError

        self.template = message.template
        try:
            for s in self.sessions:
                s.set_template(message.template)
        except TuituneError as exc:
            self._status(f"Template not changed: {exc}", "bold red")
            return
        if self.sessions:
            self._status(self._describe())
