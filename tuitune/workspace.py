"""A workspace is a folder with data/, configs/, runs/ and models/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SUBDIRS = ("data", "configs", "runs", "models")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: str | Path = ".") -> "Workspace":
        return cls(Path(root).expanduser().resolve())

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def ensure(self) -> "Workspace":
        for name in SUBDIRS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        return self

    def is_workspace(self) -> bool:
        return any((self.root / name).is_dir() for name in SUBDIRS)
