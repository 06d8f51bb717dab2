"""The frame every step screen shares: header, step sidebar, body, footer."""

from __future__ import annotations

from typing import Callable

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header

from screens.widgets.stepnav import StepNav


class StepScreen(Screen):
    """Base class of a step. Subclasses set ``STEP`` and ``HELP`` and implement ``compose_body``.

    A step that holds edits not yet written (the Config form) overrides
    :meth:`unsaved_changes`, :meth:`save_then` and :meth:`discard_changes`; the app then
    asks before the user quits or leaves the step (:meth:`confirm_leave`).
    """

    STEP = ""
    HELP = ""
    #: What may take the focus when the step opens or comes back (after the palette, a modal):
    #: lists, tables, trees, choices, never a text field, where the number keys and q would type
    #: instead of switching steps and quitting. A screen may name its own (Data: its file tree).
    AUTO_FOCUS = "DataTable, Tree, ListView, OptionList, Select, Tabs, RadioSet, Checkbox, Switch, Button"
    #: Palette entries beyond the BINDINGS: (title, action, help), for actions without a key.
    ACTIONS: list[tuple[str, str, str]] = []

    @property
    def workspace(self):
        return self.app.workspace

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="frame"):
            yield StepNav(self.STEP, id="stepnav")
            with Vertical(id="body"):
                yield from self.compose_body()
        yield Footer(compact=True)

    def compose_body(self) -> ComposeResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_mount(self) -> None:
        # The app asks every open step for unsaved edits before it quits.
        steps = getattr(self.app, "step_screens", None)
        if steps is not None:
            steps[self.STEP] = self

    # --- unsaved edits ------------------------------------------------------------------------

    def unsaved_changes(self) -> str | None:
        """A line saying what would be lost (e.g. "configs/a.yaml: 2 unsaved edits"), or None."""
        return None

    def save_then(self, then: Callable[[], None]) -> None:
        """Save the edits, then call ``then`` (not called when saving is refused or cancelled)."""
        then()

    def discard_changes(self) -> None:
        """Throw the edits away (back to what was loaded or last saved)."""

    def confirm_leave(self, doing: str, then: Callable[[], None]) -> None:
        """Call ``then`` now, or, with unsaved edits, after asking: save, discard or stay."""
        from screens.widgets.choice import Choice, ChoiceScreen

        what = self.unsaved_changes()
        if not what:
            then()
            return

        def answer(choice: str | None) -> None:
            if choice == "save":
                self.save_then(then)
            elif choice == "discard":
                self.discard_changes()
                then()

        self.app.push_screen(ChoiceScreen("Unsaved edits", f"{what}. Save them before you {doing}?",
                                          [Choice("save", "Save", "s", "primary"),
                                           Choice("discard", "Discard edits", "d", "error"),
                                           Choice("cancel", "Stay", "c")]), answer)
