"""A file browser rooted at the workspace, with data/ open and noise hidden.

It keeps up with the folder: files copied in while the app is open (scp over SSH) appear on
their own (a stat of the open folders every :attr:`DataFileTree.POLL_SECONDS`), and
:meth:`DataFileTree.reread` reads it again at once (the Data step's ``r`` key, its palette
entry, entering the step). Long names are shortened in the middle, so the extension stays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from rich.style import Style
from rich.text import Text
from textual.widgets import DirectoryTree
from textual.widgets.tree import TreeNode

from screens.widgets.text import middle_cut

HIDDEN_DIRS = {"runs", "models", "__pycache__", "node_modules"}


class DataFileTree(DirectoryTree):
    """The workspace's files; hidden files, runs/ and models/ are left out (they hold no data files)."""

    #: How often the open folders are checked for new, removed or changed files.
    POLL_SECONDS = 2.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: What the open folders held at the last read (None: the first read is not done yet).
        self._seen: tuple | None = None
        self._queued = False  # a reread waits in the tree's queue

    def on_mount(self) -> None:
        self.set_interval(self.POLL_SECONDS, self._poll, name="data-tree-poll")

    def filter_paths(self, paths: Iterable[Path]) -> Iterable[Path]:
        return [p for p in paths if not p.name.startswith(".") and p.name not in HIDDEN_DIRS]

    async def watch_path(self) -> None:
        """Textual loads the root when the path is set (on mount); data/ is opened after that
        load, never beside it. A separate worker raced it: when the root's load came second, it
        replaced the opened data/ node with a closed one."""
        await super().watch_path()
        await self.open_data()
        self._seen = self.listing()

    async def open_data(self) -> None:
        """Open data/ and put the cursor on it (the root is already loaded)."""
        for child in self.root.children:
            if child.data is not None and child.data.path.name == "data":
                await self.reload_node(child)
                # A node's line is known once the tree's lines are rebuilt, which asking for the last
                # line does; without it the cursor stayed on the root (down, down, Enter closed data/).
                _ = self.last_line
                self.move_cursor(child, animate=False)
                break

    # --- keeping up with the folder ------------------------------------------------------------

    def listing(self) -> tuple:
        """Names and modification times of what the open folders hold (as shown: filtered)."""
        seen = []
        todo: list[TreeNode] = [self.root]
        while todo:
            node = todo.pop()
            if node.data is None or not node.allow_expand or not node.is_expanded:
                continue
            folder = Path(node.data.path)
            try:
                with os.scandir(folder) as it:
                    entries = sorted((e.name, e.stat(follow_symlinks=False).st_mtime_ns) for e in it
                                     if e.name in {p.name for p in self.filter_paths([Path(e.name)])})
            except OSError:
                entries = [("", -1)]  # gone or unreadable: a change too
            seen.append((str(folder), tuple(entries)))
            todo.extend(node.children)
        return tuple(sorted(seen))

    def reread(self) -> None:
        """Read the folders again soon, keeping what is open and where the cursor is.

        The read runs on the tree's own message queue, one at a time: Textual's reload resets a
        folder's node and reads it again, and a node-expanded event handled in between (as it
        would be when a reload ran from the screen or a timer) makes the loader fill the folder
        a second time, closed. Requests made before a queued read starts share it."""
        if not self._queued:
            self._queued = True
            self.call_later(self._reread_now)

    async def _reread_now(self) -> None:
        self._queued = False
        if self._seen is None:  # the first read is still going: it will show everything
            return
        before = self.listing()  # taken first: a file that lands during the read shows at the next poll
        await self.reload()
        self._seen = before

    @property
    def settled(self) -> bool:
        """Nothing left to read: no read queued or going on, and the folders hold what was read last."""
        return (self._seen is not None and not self._queued and not self.lock.is_locked
                and self.listing() == self._seen)

    def _poll(self) -> None:
        if self._seen is not None and not self._queued and self.listing() != self._seen:
            self.reread()

    # --- names that fit -------------------------------------------------------------------------

    def render_label(self, node: TreeNode, base_style: Style, style: Style) -> Text:
        """The label, its name shortened in the middle to the width the tree has (styles kept)."""
        label = super().render_label(node, base_style, style)
        room = self.scrollable_content_region.width - self._indent(node)
        if not self.is_mounted or room <= 0 or label.cell_len <= room:
            return label
        name = node.label.plain
        at = len(label) - len(name)  # the label is the icon, then the name
        cut = middle_cut(name, room - label[:at].cell_len)
        if at < 0 or cut is None:
            return label
        head, tail = cut
        dots = label[at + head: at + head + 1]
        dots.plain = "…"
        return label[: at + head] + dots + (label[len(label) - tail:] if tail else Text())

    def get_content_width(self, container, viewport) -> int:
        """As wide as the longest whole name (the stylesheet caps it; names are cut to fit then)."""
        plain = Style()
        return max([self._indent(line.node) + super(DataFileTree, self).render_label(line.node, plain, plain).cell_len
                    for line in self._tree_lines] or [self.virtual_size.width])

    def _indent(self, node: TreeNode) -> int:
        """The cells before a node's label: the guides of its depth."""
        depth = 0
        while node.parent is not None:
            depth, node = depth + 1, node.parent
        return depth * self.guide_depth if self.show_root else max(0, depth - 1) * self.guide_depth
