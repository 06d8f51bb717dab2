"""Text that fits its cells: names cut in the middle so their start and extension stay.

Shared by the widgets that show file names and paths in a fixed width (the Data step's tree, the
Config side panel's diff). Rich and Textual only cut at the end, where the extension is what tells
two files apart.
"""

from __future__ import annotations


def middle_cut(name: str, width: int) -> tuple[int, int] | None:
    """How many characters of ``name`` to keep at its start and at its end, around a "…", so that
    it fits ``width`` cells with its extension whole; None when it fits as it is."""
    from rich.cells import cell_len

    if cell_len(name) <= width:
        return None
    stem, dot, ext = name.rpartition(".")
    tail_cells = cell_len(ext) + 1 if dot and stem and len(ext) <= 8 else 0
    room = width - 1 - tail_cells  # cells left for the start and the end of the stem
    if room < 2:  # too narrow for both: keep the end
        room, tail_cells = width - 1, 0
    head = _chars_within(name, room - room // 3)
    tail = _chars_within(name[head:][::-1], width - 1 - cell_len(name[:head]))
    return head, tail


def _chars_within(text: str, cells: int) -> int:
    """How many characters from the start of ``text`` fit in ``cells`` cells."""
    from rich.cells import cell_len

    used = n = 0
    for ch in text:
        used += cell_len(ch)
        if used > cells:
            break
        n += 1
    return n


def shorten_middle(name: str, width: int) -> str:
    """``name`` in at most ``width`` cells, cut in the middle so the start and the extension stay
    ("MedInfo2019-QA-Medications.xlsx" → "MedInfo2019-…ications.xlsx"). Rich and Textual only cut
    at the end, where the extension is what tells two files apart."""
    cut = middle_cut(name, width)
    if cut is None:
        return name
    head, tail = cut
    return name[:head] + "…" + (name[-tail:] if tail else "")
