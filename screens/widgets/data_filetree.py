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

    async def open_data(self) -> None:
        """Load the root and open data/ (awaitable, so tests can wait for a stable tree)."""
        await self.reload()
        for child in self.root.children:
            if child.data is not None and child.data.path.name == "data":
                await self.reload_node(child)
                self.move_cursor(child, animate=False)
                break
