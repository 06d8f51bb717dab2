"""A file browser rooted at the workspace, with data/ open and noise hidden."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from textual.widgets import DirectoryTree

HIDDEN_DIRS = {"runs", "models", "__pycache__", "node_modules"}


class DataFileTree(DirectoryTree):
    """The workspace's files; hidden files, runs/ and models/ are left out (they hold no data files)."""

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".") and p.name not in HIDDEN_DIRS]

    async def watch_path(self) -> None:
        """Textual loads the root when the path is set (on mount); data/ is opened after that
        load, never beside it. A separate worker raced it: when the root's load came second, it
        replaced the opened data/ node with a closed one."""
        await super().watch_path()
        await self.open_data()

    async def open_data(self) -> None:
        """Open data/ and put the cursor on it (the root is already loaded)."""
        for child in self.root.children:
            if child.data is not None and child.data.path.name == "data":
                await self.reload_node(child)
                self.move_cursor(child, animate=False)
                break
