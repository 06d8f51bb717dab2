"""The frame every step screen shares: header, step sidebar, body, footer; and the hand-overs.

A step's hand-over keys (``tuitune.steps``: ``Step.gives``) become bindings of its screen here,
in place of :data:`HANDOVER_KEYS` in its ``BINDINGS`` (after them when it has none), and each
runs :meth:`StepScreen.action_open_in`: the screen says what it hands (:meth:`handover_value`),
the app keeps it as one ``Handover`` and the target step opens. The receiving screen calls
:meth:`StepScreen.take_handover`, which gives each hand-over once, by its sequence number.
"""

from __future__ import annotations

from typing import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header

from screens.widgets.stepnav import StepNav
from tuitune.steps import Handover, give, step

#: Where a screen's BINDINGS place its step's hand-over keys (in the footer's order).
HANDOVER_KEYS = "<the step's hand-over keys>"


def handover_bindings(key: str) -> list[Binding]:
    """The bindings of step ``key``'s hand-over keys, from the registry."""
    return [Binding(g.key, f"open_in('{g.target}')", g.label, id=f"{key}-open-{g.target}", tooltip=g.tooltip)
            for g in step(key).gives]


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
    #: The sequence number of the last hand-over this screen took or gave.
    _handover_seq = 0

    def __init_subclass__(cls, **kwargs) -> None:
        # Before Textual's own, which merges the class's BINDINGS. A subclass of a step's screen
        # that names no STEP and no BINDINGS keeps the keys it inherits.
        own = cls.__dict__.get("BINDINGS")
        if own is not None or "STEP" in cls.__dict__:
            keys = handover_bindings(cls.STEP) if cls.STEP else []
            own = list(own or [])
            at = own.index(HANDOVER_KEYS) if HANDOVER_KEYS in own else len(own)
            own[at:at + 1] = keys
            cls.BINDINGS = own
        super().__init_subclass__(**kwargs)

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

    # --- hand-overs between steps ---------------------------------------------------------------

    def handover_value(self, kind: str) -> object | None:
        """What this step hands over as ``kind`` now (its selection), or None, having said why."""
        return None

    def action_open_in(self, target: str) -> None:
        """Hand this step's selection to step ``target`` (a registry row's key) and open it."""
        g = give(self.STEP, target)
        value = self.handover_value(g.kind)
        if value is None:
            return
        self._handover_seq = self.app.hand_over(g.kind, value).seq  # not taken back on return
        self.app.switch_mode(target)

    def take_handover(self) -> Handover | None:
        """The hand-over left for this step, once: None when there is none new, or of a kind the step
        does not take (``Step.takes``)."""
        h = self.app.handover
        if h is None or h.seq <= self._handover_seq or h.kind not in step(self.STEP).takes:
            return None
        self._handover_seq = h.seq
        return h

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
