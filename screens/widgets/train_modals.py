"""Moved to ``screens.widgets.train.modals``; ``one_line`` to ``screens.workers``.

Kept only for ``screens/merge.py``'s import of ``one_line`` until it imports it from
``screens.workers``; then this file goes.
"""

from screens.workers import one_line  # noqa: F401
