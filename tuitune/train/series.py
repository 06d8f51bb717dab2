"""A bounded (x, y) series for the dashboard's charts: a run with 100k logged steps stays a few
thousand points, the newest exact and the lowest tracked exactly (headless: standard library only)."""

from __future__ import annotations

import itertools
from typing import Iterable

MAX_POINTS = 2000


class Series:
    """(x, y) points kept to at most ``max_points`` by merging neighbouring buckets.

    While the series is short every point is kept as is. When it would grow past the
    bound, pairs of buckets merge (their mean, at the first x of the pair) and each
    bucket covers twice as many points from then on. The newest point is always shown
    exactly, and the lowest value (with its x) is tracked exactly in ``min``.
    """

    __slots__ = ("max_points", "width", "_x", "_y", "_n", "_open_x", "_open_sum", "_open_n",
                 "last", "min", "count")

    def __init__(self, max_points: int = MAX_POINTS):
        if max_points < 4:
            raise ValueError("max_points must be at least 4")
        self.max_points = max_points
        self.width = 1           # raw points per closed bucket
        self._x: list[float] = []  # closed buckets: first x, mean y, points merged
        self._y: list[float] = []
        self._n: list[int] = []
        self._open_x = 0.0
        self._open_sum = 0.0
        self._open_n = 0
        self.last: tuple[float, float] | None = None
        self.min: tuple[float, float] | None = None
        self.count = 0

    def __len__(self) -> int:
        return len(self.points())

    def add(self, x: float, y: float) -> None:
        self.count += 1
        self.last = (x, y)
        if self.min is None or y < self.min[1]:
            self.min = (x, y)
        if self._open_n == 0:
            self._open_x = x
        self._open_sum += y
        self._open_n += 1
        if self._open_n >= self.width:
            self._x.append(self._open_x)
            self._y.append(self._open_sum / self._open_n)
            self._n.append(self._open_n)
            self._open_n = 0
            self._open_sum = 0.0
            # Room for the open bucket and the exact last point.
            if len(self._x) > self.max_points - 2:
                self._halve()

    def extend(self, points: Iterable[tuple[float, float]]) -> None:
        """``add`` each point (the same result, with less overhead per point)."""
        it = iter(points)
        while True:
            if self._open_n == 0 and self.width == 1:
                # Nothing merged yet: points go straight into closed buckets until the bound.
                room = self.max_points - 2 - len(self._x)
                chunk = list(itertools.islice(it, max(room, 0)))
                if chunk:
                    xs, ys = zip(*chunk)
                    self._x.extend(xs)
                    self._y.extend(ys)
                    self._n.extend([1] * len(chunk))
                    self.count += len(chunk)
                    self.last = chunk[-1]
                    low = min(chunk, key=lambda p: p[1])
                    if self.min is None or low[1] < self.min[1]:
                        self.min = low
                    if len(chunk) < room:
                        return
                point = next(it, None)
                if point is None:
                    return
                self.add(*point)
                continue
            # Merging: fill the open bucket a whole bucket at a time.
            need = self.width - self._open_n
            chunk = list(itertools.islice(it, need))
            if not chunk:
                return
            if len(chunk) < need:
                for x, y in chunk:
                    self.add(x, y)
                return
            # All but the last point join the open bucket; the last one closes it (and may merge).
            head = chunk[:-1]
            if head:
                if self._open_n == 0:
                    self._open_x = head[0][0]
                ys = [y for _, y in head]
                acc = self._open_sum
                for y in ys:  # in order, as add() would: the same sums to the last bit
                    acc += y
                self._open_sum = acc
                self._open_n += len(head)
                self.count += len(head)
                low = min(ys)
                if low < self.min[1]:
                    self.min = head[ys.index(low)]
            self.add(*chunk[-1])

    def _halve(self) -> None:
        xs, ys, ns = self._x, self._y, self._n
        nx, ny, nn = [], [], []
        for i in range(0, len(xs) - 1, 2):
            n = ns[i] + ns[i + 1]
            nx.append(xs[i])
            ny.append((ys[i] * ns[i] + ys[i + 1] * ns[i + 1]) / n)
            nn.append(n)
        if len(xs) % 2:
            nx.append(xs[-1])
            ny.append(ys[-1])
            nn.append(ns[-1])
        self._x, self._y, self._n = nx, ny, nn
        self.width *= 2

    def points(self) -> list[tuple[float, float]]:
        """The points to draw, oldest first; the last one is the newest raw point."""
        pts = list(zip(self._x, self._y))
        if self._open_n:
            pts.append((self._open_x, self._open_sum / self._open_n))
        if self.last is not None:
            if pts and pts[-1][0] >= self.last[0]:
                pts[-1] = self.last  # the newest point is its own bucket: show it exactly
            else:
                pts.append(self.last)
        return pts
