"""Notifications (``notify:`` in the run config) through Apprise: the URLs, their secrets, and sending.

Apprise (https://github.com/caronc/apprise) knows how to reach ntfy, Slack, Telegram, Discord, email,
a webhook and 250-odd other services, each from one URL, and which parts of each URL are secret (its
plugins mark tokens and passwords ``private``). This module holds what tuitune adds around it:

* a URL in a config never holds a secret: a token or password is written ``${NAME}`` and read, only
  when a message is sent, from the run's environment or the config's ``notify.secrets_file`` (mode
  0600). :func:`url_problem` refuses a literal secret (naming the part and how to move it) and an
  unknown scheme (listing Apprise's); :func:`notify_problems` checks the rest against this machine;
* :class:`Sender` sends from a thread with a time limit, so training never waits on a network; a
  message that cannot be sent is a warning line in the run's log (its secrets taken out), never an error;
* :func:`keep_telemetry_off`: the run's libraries send no usage telemetry unless the config asks.

Standard library at import; apprise inside the functions that need it. It imports nothing of
tuitune's (the config's schema and checks call it, so it must not call them back).
"""

from __future__ import annotations

import logging
import os
import queue
import re
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

#: What a run can tell you about: ``ended`` is any of the three ends (finished, failed, stopped), each of
#: which may be named alone (``[failed, stalled]``: only what went wrong).
ENDS = ("finished", "failed", "stopped")
EVENTS = ("ended", *ENDS, "stalled", "evaluation")
DEFAULT_EVENTS = ("ended", "stalled")
#: A secret in a URL: ``${NAME}``.
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Seconds the worker waits, at its end, for messages still being sent.
CLOSE_TIMEOUT_S = 30.0
#: Headers of the webhook schemes (json://, form://, xml://) that carry a credential, though Apprise
#: does not mark them private (``?+Authorization=...``).
_SECRET_HEADER = re.compile(r"auth|token|key|secret|pass|cookie", re.I)
WIKI = "https://github.com/caronc/apprise/wiki"


@dataclass(frozen=True)
class NotifySettings:
    """What a run's ``notify:`` section turns into: the sender's URLs and events, the secrets file (an
    absolute path), the watchdog's stall margin in seconds, and the environment the run sets."""
    urls: tuple[str, ...]
    events: tuple[str, ...]
    secrets_file: Path | None
    stall_seconds: float
    environment: tuple[tuple[str, str], ...]

    def wants(self, event: str) -> bool:
        return bool(self.urls) and (event in self.events or (event in ENDS and "ended" in self.events))


def notify_settings(cfg) -> NotifySettings:
    """The settings of a run config (a ``RunConfig``; taken as it comes, so this module needs no
    tuitune.config import: the config imports this one)."""
    n = cfg.notify
    return NotifySettings(
        urls=tuple(u.strip() for u in n.urls if u.strip()), events=tuple(n.events),
        secrets_file=cfg.resolve(n.secrets_file) if n.secrets_file else None,
        stall_seconds=float(n.stall_minutes) * 60,
        environment=() if n.telemetry else (("HF_HUB_DISABLE_TELEMETRY", "1"),))


# --- Apprise, quietly ------------------------------------------------------------------------------

@contextmanager
def _captured():
    """Apprise's warnings while the block runs, as a list of lines, never printed: they may hold a
    whole URL with its secrets ("Unparseable Telegram URL tgram://TOKEN/..."), so they go only where
    :func:`scrub` has taken the secrets out."""
    import apprise

    logger = logging.getLogger(apprise.LOGGER_NAME)
    logger.propagate = False  # never to the root logger's handlers (or Python's last-resort stderr)
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as out:
        lines: list[str] = []
        try:
            yield lines
        finally:
            lines.extend(line for line in out.getvalue().splitlines() if line.strip())


def _manager():
    from apprise.manager_plugins import NotificationManager  # a singleton: the plugins load once

    return NotificationManager()


def schemes() -> list[str]:
    """Every URL scheme Apprise knows, sorted."""
    return sorted(_manager().schemas())


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def service_page(scheme: str) -> str:
    """The page that says how this scheme's URL is written."""
    try:
        return getattr(_manager()[scheme], "setup_url", None) or WIKI
    except KeyError:
        return WIKI


def _private_keys(plugin) -> set[str]:
    """The parsed-URL keys a plugin marks private (tokens, passwords, keys), with their aliases."""
    out: set[str] = set()
    for table in (plugin.template_tokens, plugin.template_args):
        for key, spec in table.items():
            if spec.get("private"):
                out.update(k for k in (key, spec.get("map_to")) if k)
    out.update(k for k, spec in plugin.template_args.items() if spec.get("alias_of") in out)
    return out


def _literal(value: str) -> bool:
    """Whether a secret part is written out rather than as ``${NAME}`` (empty is no secret)."""
    value = unquote(value).strip()
    return bool(value) and bool(VAR_RE.sub("", value).strip())


def _secret_parts(plugin, parsed: dict) -> list[str]:
    """The names of the secret parts written literally in a parsed URL (Apprise's private tokens, and
    credential headers of the webhook schemes)."""
    found = []
    for key in sorted(_private_keys(plugin)):
        value = parsed.get(key)
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, str) and _literal(v) for v in values):
            found.append(key)
    for name, value in (parsed.get("headers") or {}).items():
        if _SECRET_HEADER.search(name) and isinstance(value, str) and _literal(value):
            found.append(f"header {name}")
    return found


def url_problem(url: str) -> str | None:
    """What is wrong with a ``notify.urls`` entry as written in a config, or None.

    Refused: no ``scheme://``; a scheme Apprise does not know (its schemes listed); a secret written
    out (the part named, and how to move it: ``${NAME}`` from the environment or secrets_file); a URL
    without variables that Apprise cannot read. A URL whose variables keep Apprise from reading it
    (a Telegram token must look like one) is taken; ``notify_problems`` reads it with them filled in.
    The message never quotes the URL: it may hold the secret it refuses.
    """
    url = url.strip()
    scheme = scheme_of(url)
    if not scheme:
        return "not a URL: write scheme://..., e.g. ntfy://ntfy.sh/TOPIC or json://HOST/PATH"
    for m in re.finditer(r"\$\{([^}]*)\}?", url):
        if not VAR_RE.fullmatch(m.group(0)):
            return f"{m.group(0)[:20]!r} is not a variable: write ${{NAME}} (letters, digits and _)"
    known = schemes()
    if scheme not in known:
        import difflib

        close = difflib.get_close_matches(scheme, known, n=1)
        hint = f"did you mean {close[0]}://? " if close else ""
        return f"unknown scheme {scheme}://; {hint}Apprise knows: {', '.join(known)}"
    plugin = _manager()[scheme]
    with _captured():
        parsed = plugin.parse_url(url)
    if parsed is None:
        if VAR_RE.search(url):
            return None
        return f"Apprise cannot read this {scheme}:// URL; see {service_page(scheme)} for how it is written"
    parts = _secret_parts(plugin, parsed)
    if parts:
        name = re.sub(r"\W+", "_", f"{scheme}_{parts[0].replace('header ', '')}").upper()
        what, verb, each = (parts[0], "is", "") if len(parts) == 1 else (", ".join(parts), "are", "each, e.g. ")
        return (f"the {what} of this {scheme}:// URL {verb} written in the config; keep secrets out of it: write "
                f"{each}${{{name}}} in its place and `export {name}=...` before the run starts (or put {name}=... "
                "in notify.secrets_file, mode 0600)")
    if not VAR_RE.search(url):
        with _captured():
            readable = _instantiate(url) is not None
        if not readable:
            return f"Apprise cannot read this {scheme}:// URL; see {service_page(scheme)} for how it is written"
    return None


def _instantiate(url: str):
    import apprise

    return apprise.Apprise.instantiate(url)


# --- secrets ----------------------------------------------------------------------------------------

def secrets_problem(path: Path) -> str | None:
    """Why the secrets file cannot be used (missing, not a file, readable by others), or None."""
    try:
        st = path.stat()
    except OSError:
        return f"{path} does not exist; create it with NAME=value lines, then `chmod 600 {path}`"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a file; give a file of NAME=value lines (mode 0600)"
    if st.st_mode & 0o077:
        return (f"{path} can be read by others (mode {stat.S_IMODE(st.st_mode):04o}); it holds secrets: "
                f"`chmod 600 {path}`")
    return None


def read_secrets(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (``#`` comments, an optional ``export``, quotes around a value).

    Written here rather than with python-dotenv: these ten lines are all of that format a secrets file
    needs, and a dependency for them is not worth it.
    """
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name.strip()] = value
    return out


def lookup(secrets_file: Path | None, environ: Mapping[str, str] | None = None) -> Callable[[str], str | None]:
    """The value of ``${NAME}``: the environment's, else the secrets file's (when it is private).
    A file that cannot be used reads as empty (``notify_problems`` says why, before the run)."""
    environ = os.environ if environ is None else environ
    cache: dict[str, str] | None = None

    def get(name: str) -> str | None:
        nonlocal cache
        if environ.get(name):
            return environ[name]
        if cache is None:
            cache = read_secrets(secrets_file) if secrets_file and not secrets_problem(secrets_file) else {}
        return cache.get(name) or None
    return get


def expand(url: str, get: Callable[[str], str | None]) -> tuple[str, list[str], list[str]]:
    """(the URL with each ``${NAME}`` filled in, the names that have no value, the values used)."""
    missing, used = [], []

    def fill(m: re.Match) -> str:
        value = get(m.group(1))
        if value is None:
            missing.append(m.group(1))
            return m.group(0)
        used.append(value)
        return value
    return VAR_RE.sub(fill, url), missing, used


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (as written, and as a URL quotes it) replaced by ``****``."""
    for value in sorted(set(secrets), key=len, reverse=True):
        if len(value) < 3:
            continue
        for form in {value, quote(value, safe=""), quote(value)}:
            text = text.replace(form, "****")
    return text


def notify_problems(urls: list[str], secrets_file: Path | None,
                    environ: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(level "error"/"warn", field, message) for what the run could not send from this machine: a
    secrets file that is missing or readable by others, a ``${NAME}`` with no value here (a warning:
    the run's own environment is what counts), a URL Apprise cannot read once its variables are in."""
    out = []
    if secrets_file is not None:
        problem = secrets_problem(secrets_file)
        if problem:
            out.append(("error", "notify.secrets_file", problem))
    get = lookup(secrets_file, environ)
    for i, url in enumerate(urls, 1):
        full, missing, used = expand(url.strip(), get)
        if missing:
            names = ", ".join(f"${{{n}}}" for n in missing)
            out.append(("warn", "notify.urls", f"entry {i}: {names} has no value here (environment or "
                        "notify.secrets_file); the run reads it when it sends, so `export` it before "
                        "`tuitune train`, or the message is not sent"))
            continue
        if used:
            with _captured():
                readable = _instantiate(full) is not None
            if not readable:
                scheme = scheme_of(url)
                out.append(("error", "notify.urls", f"entry {i}: with its variables filled in, Apprise cannot "
                            f"read this {scheme}:// URL; check the values and {service_page(scheme)}"))
    return out


# --- sending ----------------------------------------------------------------------------------------

class Sender:
    """Sends messages to the config's URLs from one thread; ``send`` returns at once.

    ``warn`` gets one line per URL that a message could not reach (its secrets scrubbed). ``close``
    waits for what is still being sent, up to ``timeout`` seconds, so the run's last message leaves
    before the process ends without a dead receiver holding the run open.
    """

    def __init__(self, urls: list[str], secrets_file: Path | None, warn: Callable[[str], None],
                 environ: Mapping[str, str] | None = None):
        self.urls = [u.strip() for u in urls if u.strip()]
        self.secrets_file = secrets_file
        self.warn = warn
        self.environ = environ
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def send(self, event: str, title: str, body: str | Callable[[], str]) -> None:
        """Queue a message; ``body`` may be a function, called in the sending thread (so what it reads
        costs the caller nothing)."""
        if not self.urls:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tuitune-notify", daemon=True)
            self._thread.start()
        self._queue.put((event, title, body))

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.warn(f"warning: notifications still being sent after {timeout:g}s; the run ends without them")

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            event, title, body = item
            try:
                text = body() if callable(body) else body
            except Exception as exc:  # noqa: BLE001 - a message never takes the run down
                text = f"{title} ({type(exc).__name__} while reading the run: {exc})"
            for url in self.urls:
                try:
                    self._send_one(url, event, title, text)
                except Exception as exc:  # noqa: BLE001 - a message never takes the run down
                    self.warn(f"warning: notification ({event}) to {url} was not sent: {type(exc).__name__}")

    def _send_one(self, url: str, event: str, title: str, body: str) -> None:
        import apprise

        full, missing, used = expand(url, lookup(self.secrets_file, self.environ))
        if missing:
            names = ", ".join(f"${{{n}}}" for n in missing)
            self.warn(f"warning: notification ({event}) to {url} was not sent: {names} is not set in the run's "
                      "environment nor in notify.secrets_file")
            return
        with _captured() as why:
            ap = apprise.Apprise()
            ok = ap.add(full) and bool(ap.notify(title=title, body=body))
        if not ok:
            reason = scrub(" ".join(why[-2:]), used) or "Apprise gave no reason"
            self.warn(f"warning: notification ({event}) to {url} was not sent: {reason}")


# --- what leaves the box ----------------------------------------------------------------------------

def keep_telemetry_off(settings: NotifySettings) -> bool:
    """Unless the config asks for it (``notify.telemetry``), turn off the usage telemetry the Hugging
    Face libraries send (TRL's trainers ping the hub when they start): ``HF_HUB_DISABLE_TELEMETRY=1``
    for this process and its children, and in huggingface_hub itself when it is already imported (it
    reads the variable on import). Returns whether telemetry stays on."""
    env = dict(settings.environment)
    if not env:
        return True
    os.environ.update(env)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_DISABLE_TELEMETRY = True
    return False
