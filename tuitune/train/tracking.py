"""Experiment trackers (``training.report_to``): one row each in :data:`TRACKERS`.

A row says everything tuitune knows about a tracker: its name (also tuitune's extra,
``pip install "tuitune[NAME]"``), the modules its Trainer callback imports, the variables that
point it at the run folder's ``tracking/``, and for a hosted service its mode variable, login
probe, offline modes and sync line. The schema takes the names from here, the config check and
the worker the install probe (:func:`trackers_problem`), the worker the environment
(:func:`use_trackers`), ``to_training_arguments`` the TensorBoard folder. Adding a tracker is a
row here and its test.

Layering: this module imports the standard library, ``tuitune.errors`` and the run folder
(``tuitune.train.runfolder``, itself standard library only), never ``tuitune.config``. So
``tuitune.config.schema`` may import it at module level (the names it validates) while
``tuitune.train`` imports ``tuitune.config``: no cycle, and the schema stays light.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tuitune.errors import TuituneError
from tuitune.train.runfolder import RunFolder


@dataclass
class TrackingSetup:
    """What the worker does for ``training.report_to``: variables to set, folders to make, lines to log."""
    env: dict[str, str] = field(default_factory=dict)
    dirs: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Hosted:
    """A tracker with a hosted service: online with a login, files kept here for a later sync without."""
    mode_var: str                  # the variable that picks its mode (WANDB_MODE)
    online: str                    # the mode that reports to the service ("online", "cloud")
    local_modes: Mapping[str, str]  # modes that keep the files here -> the word the log line uses
    login: Callable[[Mapping[str, str]], str | None]  # how it would log in here, or None
    no_login: str                  # what is missing when there is no login
    sync: str                      # the upload command for offline files ("{where}" filled in)


@dataclass(frozen=True)
class Tracker:
    """One experiment tracker the Trainer can report to."""
    name: str                      # in report_to, and the pip extra of tuitune that installs it
    modules: tuple[str, ...]       # what its Trainer callback imports (any one installed will do)
    setup: Callable[["Tracker", "_Env"], str]  # sets its environment, returns the line that says where
    folder_vars: tuple[str, ...] = ()  # the variables naming its folder: the user's first, the rest follow it
    folder: str = ""               # that folder inside the run's tracking/ ("": tracking/ itself)
    files: str = ""                # the folder its SDK writes into inside that one (wandb adds wandb/)
    view: str = ""                 # the command that shows the local files ("{where}" filled in)
    hosted: Hosted | None = None

    def folder_in(self, run_dir) -> Path:
        """Its folder in the run folder at ``run_dir`` (where it writes unless the user says otherwise)."""
        return RunFolder(Path(run_dir)).tracking / self.folder  # a Path / "" is that Path

    def installed(self) -> bool:
        return any(importlib.util.find_spec(m) is not None for m in self.modules)


class _Env:
    """One tracker's set-up: reads ``environ``, records into ``out`` what to set and make."""

    def __init__(self, run_dir: Path, environ: Mapping[str, str], out: TrackingSetup):
        self.run_dir, self.environ, self.out = run_dir, environ, out

    def put(self, key: str, value, folder: bool = False) -> str:
        """``environ[key]`` if the user set it (never replaced), else ``value`` (to be set, and made if a folder)."""
        if self.environ.get(key):
            return self.environ[key]
        self.out.env[key] = str(value)
        if folder:
            self.out.dirs.append(Path(value))
        return str(value)

    def folder(self, t: Tracker) -> str:
        """The tracker's folder (the user's, or its place in ``tracking/``), with the ones following it set."""
        first, *rest = t.folder_vars
        where = self.put(first, t.folder_in(self.run_dir), folder=True)
        for key in rest:
            self.put(key, where)
        return str(Path(where) / t.files) if t.files else where


def _local(t: Tracker, env: _Env) -> str:
    """A tracker that only writes files (TensorBoard)."""
    where = env.folder(t)
    return f"tracking: {t.name} writes to {where} (view: {t.view.format(where=where)})"


def _hosted(t: Tracker, env: _Env) -> str:
    """wandb, swanlab: the hosted service with a login (or the mode the user set), else offline."""
    h = t.hosted
    where = env.folder(t)
    login = h.login(env.environ)
    chosen = env.environ.get(h.mode_var)
    mode = chosen or (h.online if login else env.put(h.mode_var, "offline"))
    if mode in h.local_modes:
        why = "" if chosen else f" ({h.no_login})"
        return (f"tracking: {t.name} {h.local_modes[mode]}{why}, files in {where} "
                f"(upload later: {h.sync.format(where=where)})")
    if mode == "disabled":
        return f"tracking: {t.name} disabled by {h.mode_var}=disabled"
    return f"tracking: {t.name} reports to its hosted service ({login or h.mode_var}), local files in {where}"


def _mlflow(t: Tracker, env: _Env) -> str:
    """A file store in the run folder unless ``MLFLOW_TRACKING_URI`` names a server."""
    uri = env.put("MLFLOW_TRACKING_URI", t.folder_in(env.run_dir).as_uri())
    if "MLFLOW_TRACKING_URI" in env.out.env:
        # MLflow 3 refuses its file store (in maintenance) unless this says it is wanted.
        env.put("MLFLOW_ALLOW_FILE_STORE", "true")
    if uri.startswith("file:"):
        return f"tracking: mlflow writes to {uri} (view: {t.view.format(where=uri)})"
    return f"tracking: mlflow reports to {uri} (MLFLOW_TRACKING_URI)"


def _trackio(t: Tracker, env: _Env) -> str:
    """Local files; a Hugging Face Space as well when ``TRACKIO_SPACE_ID`` is set."""
    where = env.folder(t)
    space = env.environ.get("TRACKIO_SPACE_ID")
    if space:
        return f"tracking: trackio reports to the Space {space} (TRACKIO_SPACE_ID), local files in {where}"
    return f"tracking: trackio writes to {where} (view: {t.view.format(where=where)})"


def _netrc_has(path: Path, host: str) -> bool:
    """Whether the netrc file at ``path`` has an entry for ``host`` (its secret is not looked at)."""
    import netrc

    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        try:
            return f"machine {host}" in path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("HOME") or Path.home())


def wandb_login(environ: Mapping[str, str]) -> str | None:
    """How wandb would log in here ("WANDB_API_KEY", "~/.netrc"), or None."""
    if environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    from urllib.parse import urlparse

    host = urlparse(environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = Path(environ["NETRC"]) if environ.get("NETRC") else _home(environ) / ".netrc"
    return "~/.netrc" if _netrc_has(path, host) else None


def swanlab_login(environ: Mapping[str, str]) -> str | None:
    """How swanlab would log in here ("SWANLAB_API_KEY", or the login ``swanlab login`` saved), or None."""
    if environ.get("SWANLAB_API_KEY"):
        return "SWANLAB_API_KEY"
    folder = environ.get("SWANLAB_ROOT") or environ.get("SWANLAB_SAVE_DIR")
    saved = Path(folder) if folder else _home(environ) / ".swanlab"
    return "swanlab login" if (saved / ".netrc").is_file() else None


#: The trackers, in the order the docs and the "choose from" message list them.
TRACKERS: dict[str, Tracker] = {t.name: t for t in (
    # tensorboard: either writer will do for the Trainer's callback.
    Tracker("tensorboard", ("tensorboard", "tensorboardX"), _local, ("TENSORBOARD_LOGGING_DIR",), "tensorboard",
            view="tensorboard --logdir {where}"),
    Tracker("wandb", ("wandb",), _hosted, ("WANDB_DIR",), files="wandb", hosted=Hosted(
        "WANDB_MODE", "online", {"offline": "offline", "dryrun": "offline"}, wandb_login,
        "no WANDB_API_KEY or ~/.netrc login", "wandb sync {where}/offline-run-*")),
    # SWANLAB_LOGDIR: the newer SDK's name for SWANLAB_LOG_DIR.
    Tracker("swanlab", ("swanlab",), _hosted, ("SWANLAB_LOG_DIR", "SWANLAB_LOGDIR"), "swanlab", hosted=Hosted(
        "SWANLAB_MODE", "cloud", {"offline": "offline", "local": "local"}, swanlab_login,
        "no SWANLAB_API_KEY or saved login", "swanlab sync {where}")),
    Tracker("mlflow", ("mlflow",), _mlflow, folder="mlruns", view="mlflow ui --backend-store-uri {where}"),
    Tracker("trackio", ("trackio",), _trackio, ("TRACKIO_DIR",), "trackio", view="TRACKIO_DIR={where} trackio show"),
)}
#: The names ``training.report_to`` accepts.
TRACKER_NAMES = tuple(TRACKERS)


def missing_trackers(report_to) -> list[str]:
    """The trackers in ``report_to`` whose package is not installed here."""
    return [name for name in report_to
            if not (TRACKERS[name].installed() if name in TRACKERS else importlib.util.find_spec(name) is not None)]


def trackers_problem(report_to) -> str | None:
    """What to do when trackers in ``report_to`` are not installed (each is an extra of tuitune), or None."""
    missing = missing_trackers(report_to)
    if not missing:
        return None
    names = ", ".join(missing)
    verb = "is" if len(missing) == 1 else "are"
    extras = ",".join(missing)
    return f'{names} {verb} not installed; pip install "tuitune[{extras}]", or take {names} out of report_to'


def tracking_env(report_to, run_dir, environ: Mapping[str, str]) -> TrackingSetup:
    """Point each chosen tracker at the run folder's ``tracking/``, offline where there is no login.

    Reads only ``environ`` (and, for wandb and swanlab, whether a saved login exists); a variable
    already set there is the user's choice and is never replaced. wandb without ``WANDB_API_KEY``
    or a ``~/.netrc`` entry runs offline (``wandb sync`` uploads later), swanlab without
    ``SWANLAB_API_KEY`` or a saved login likewise (``swanlab sync``); mlflow writes a file store
    unless ``MLFLOW_TRACKING_URI`` is set; trackio is local unless ``TRACKIO_SPACE_ID`` is set.
    """
    out = TrackingSetup()
    env = _Env(Path(run_dir).resolve(), environ, out)
    for t in (TRACKERS[name] for name in report_to if name in TRACKERS):  # the schema lets no other name by
        out.lines.append(t.setup(t, env))
    return out


def use_trackers(report_to, run: RunFolder, log) -> None:
    """Point ``training.report_to``'s trackers at ``run/tracking/`` (offline without a login) in this
    process's environment, before the Trainer builds their callbacks; one line each says where."""
    if not report_to:
        return
    problem = trackers_problem(report_to)  # checked at launch too; a resume is not
    if problem:
        raise TuituneError(f"training.report_to: {problem}")
    setup = tracking_env(report_to, run.path, os.environ)
    for folder in setup.dirs:
        folder.mkdir(parents=True, exist_ok=True)
    os.environ.update(setup.env)
    for line in setup.lines:
        log(line)
