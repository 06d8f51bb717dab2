"""A workspace is a folder with data/, configs/, runs/ and models/; what each holds, listed.

The listings (:meth:`Workspace.model_dirs`, :meth:`Workspace.tokenizer_dirs`,
:meth:`Workspace.config_files`, :meth:`Workspace.run_folders`) are the one place the CLI and
every screen learn what a workspace has; what makes a folder a model, an adapter or a
tokenizer is said here too (:func:`is_model_dir`, :func:`is_adapter_dir`, :func:`has_tokenizer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SUBDIRS = ("data", "configs", "runs", "models")
#: The file endings of a run config in configs/.
CONFIG_SUFFIXES = (".yaml", ".yml")


def is_model_dir(p: Path) -> bool:
    """A Hugging Face model folder: it has ``config.json``."""
    return (p / "config.json").is_file()


def is_adapter_dir(p: Path) -> bool:
    """A PEFT adapter folder: it has ``adapter_config.json``."""
    return (p / "adapter_config.json").is_file()


def has_tokenizer(p: Path) -> bool:
    return (p / "tokenizer_config.json").is_file() or (p / "tokenizer.json").is_file()


def _entries(folder: Path) -> list[Path]:
    """What ``folder`` holds, by name, hidden names left out; nothing when it is missing or unreadable."""
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return []


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

    # --- listings -------------------------------------------------------------------------------

    def model_dirs(self) -> list[Path]:
        """The model folders (``config.json``) in models/, by name."""
        return [p for p in _entries(self.models) if is_model_dir(p)]

    def tokenizer_dirs(self) -> list[Path]:
        """The folders in models/ that hold a tokenizer, by name."""
        return [p for p in _entries(self.models) if p.is_dir() and has_tokenizer(p)]

    def config_files(self) -> list[Path]:
        """The run configs (``*.yaml``, ``*.yml``) in configs/, by name."""
        return [p for p in _entries(self.configs) if p.suffix in CONFIG_SUFFIXES and p.is_file()]

    def run_folders(self) -> list:
        """The runs in runs/ (``RunFolder``), newest first."""
        from tuitune.train.runfolder import list_runs

        return list_runs(self.root)

    def first_model(self) -> str:
        """The first model folder, as the workspace names it (``models/NAME``), or empty."""
        models = self.model_dirs()
        return self.rel(models[0]) if models else ""

    def rel(self, p: Path) -> str:
        """``p`` relative to the workspace where it is inside it, else as it is."""
        try:
            return Path(p).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(p)
