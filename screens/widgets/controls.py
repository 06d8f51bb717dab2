"""Small form controls every step uses: a checkbox whose state reads without colour, a
number field that takes digits only, and the label a field is known by.

Textual's ``Checkbox`` always draws an ``X`` and tells on from off by colour alone; its
``Input(type="integer")`` accepts ``1_000`` (Python's int() does). A form here uses
:class:`Toggle` and :class:`NumberInput` instead.
"""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label

#: What a number field may hold while the user types (a prefix of a number): no ``_``, no spaces.
NUMBER_RESTRICT = {
    "integer": r"[-+]?\d*",
    "number": r"[-+]?\d*\.?\d*(?:[eE][-+]?\d*)?",
}


class Toggle(Checkbox):
    """A checkbox drawn ``[x] label`` when on and ``[ ] label`` when off: readable in monochrome."""

    DEFAULT_CSS = """
    Toggle.-textual-compact > .toggle--button { background: transparent; color: $text-muted; }
    Toggle.-textual-compact.-on > .toggle--button { background: transparent; color: $success; text-style: bold; }
    /* Focus shows on the mark too: a toggle without a label (the Config form's) has nothing else. */
    Toggle.-textual-compact:focus > .toggle--button,
    Toggle.-textual-compact.-on:focus > .toggle--button {
        background: $block-cursor-background; color: $block-cursor-foreground;
    }
    """

    @property
    def mark(self) -> str:
        return "[x]" if self.value else "[ ]"

    def render(self) -> Content:
        mark = Content.styled(self.mark, self.get_visual_style("toggle--button"))
        if not self.label:
            return mark
        label = self.label.pad(1, 1).stylize_before(self.get_visual_style("toggle--label"))
        return Content.assemble(mark, label)

    def get_content_width(self, container, viewport) -> int:
        return 3 + ((self.label.cell_length + 2) if self.label else 0)


class NumberInput(Input):
    """An ``Input`` that takes a number and nothing else (digits, sign, point, exponent)."""

    def __init__(self, value: str = "", *, kind: str = "integer", **kwargs):
        kwargs.setdefault("restrict", NUMBER_RESTRICT[kind])
        super().__init__(value, type=kind, **kwargs)


def field_label(widget: Widget | None) -> str | None:
    """The name a user knows a field by: its ``field_label``, the label before it, its own label.

    Never a widget id: F1 and error lines speak of "Test ratio", not ``split-ratio``.
    """
    if widget is None:
        return None
    given = getattr(widget, "field_label", None)
    if given:
        return str(given)
    parent = widget.parent
    if parent is not None:
        before = None
        for child in parent.children:
            if child is widget:
                break
            if isinstance(child, Label):
                before = child
        if before is not None:
            text = str(before.content).strip()
            if text:
                return text
    if isinstance(widget, Checkbox) and widget.label:
        return widget.label.plain
    if isinstance(widget, Button):
        return str(widget.label)
    if isinstance(widget, Input) and widget.placeholder:
        return widget.placeholder
    return None
