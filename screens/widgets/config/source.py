"""The Config step's source picker: the presets, then the configs saved in configs/.

Its values are ``preset:NAME`` and ``file:PATH``; the screen loads what is picked.
"""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Select

from tuitune.config import PRESETS
from tuitune.workspace import Workspace

DEFAULT_PRESET = "tiny-demo"


def preset_key(name: str) -> str:
    return f"preset:{name}"


def file_key(path: Path) -> str:
    return f"file:{path}"


def sources(workspace: Workspace) -> list[tuple[str, str]]:
    """(label, key) of every preset, then of every config in the workspace's configs/."""
    return [*((f"preset {name}", preset_key(name)) for name in PRESETS),
            *((f"file {p.name}", file_key(p)) for p in workspace.config_files())]


class SourceSelect(Select):
    """Starts on the first saved config (or the default preset when there is none)."""

    def __init__(self, workspace: Workspace, **kwargs):
        self.ws = workspace
        options = sources(workspace)
        files = [k for _, k in options if k.startswith("file:")]
        super().__init__(options, value=files[0] if files else preset_key(DEFAULT_PRESET), allow_blank=False,
                         compact=True, tooltip="Load a preset, or a config saved in configs/ (ctrl+l).", **kwargs)

    def show(self, key: str) -> None:
        """Show ``key`` as picked (no Changed message), if it is one of the options."""
        if self.value != key and any(k == key for _, k in sources(self.ws)):
            with self.prevent(Select.Changed):
                self.value = key

    def reload(self, selected: Path | None = None) -> None:
        """List the configs again (one was saved), showing ``selected`` as picked."""
        with self.prevent(Select.Changed):
            self.set_options(sources(self.ws))
            if selected is not None:
                self.value = file_key(selected)
