"""A model's config.json from the Hugging Face hub: the hub cache, else the hub, asked once with
a short timeout; and whether the hub answers at all (the Environment step's hf-cache row).

huggingface_hub's own ``hf_hub_download`` retries a network error five times, up to 8 s apart
(``utils/_http.py``: ``_http_backoff_base``; its second HEAD passes ``retry_on_errors=True``), with
no setting to turn that off: an offline box waited 24 s. ``get_hf_file_metadata`` makes one request
without retries, so it decides here whether the hub is there before anything is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from tuitune.errors import TuituneError


def hub_cache_dir() -> str:
    """The hub cache as the environment says now (HF_HUB_CACHE, else HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return os.path.join(home, "hub")


def hub_offline() -> bool:
    """Whether the environment asks for no hub at all (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


#: Seconds the hub gets to answer the one request that decides whether it is there (no retries):
#: HF_HUB_ETAG_TIMEOUT when set, as huggingface_hub itself reads it.
HUB_TIMEOUT_S = 5.0


def _hub_timeout(default: float) -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or default)
    except ValueError:
        return default


def _in_one_line(exc: BaseException) -> str:
    """An exception as ``Type: message``, its lines joined, whole (never cut)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _no_answer(exc: BaseException, timeout: float) -> str:
    """"did not answer within 2 s (...)" for a timeout, "could not be reached (...)" for the rest."""
    if "timeout" in type(exc).__name__.lower():
        return f"did not answer within {timeout:g} s ({_in_one_line(exc)})"
    return f"could not be reached ({_in_one_line(exc)})"


def hub_unreachable(timeout: float = 2.0) -> str:
    """"" when the hub (``HF_ENDPOINT``) answered one HEAD request within ``timeout`` seconds, else
    why not, in a few words. One request, no retries: huggingface_hub's own calls retry a network
    error five times with a backoff of up to 8 s each, which is what made an offline box wait 24 s.
    """
    from huggingface_hub import constants, get_session

    try:
        response = get_session().head(constants.ENDPOINT, timeout=timeout, follow_redirects=False)
    except Exception as exc:  # noqa: BLE001 - refused, DNS, timeout, TLS: the hub is not there either way
        return f"{constants.ENDPOINT} {_no_answer(exc, timeout)}"
    if response.status_code >= 500:
        return f"{constants.ENDPOINT} answered HTTP {response.status_code}"
    return ""


def hub_config_path(repo_id: str, online: bool | None = None) -> Path:
    """``config.json`` of hub model ``repo_id``: from the local hub cache, else downloaded (when online).

    ``online=None`` follows the environment (HF_HUB_OFFLINE=1: the cache only); ``False``
    reads only the cache (a screen that estimates on every key). Raises one TuituneError
    when neither has it. The hub is asked once, with a short timeout (``HUB_TIMEOUT_S``).
    """
    cache = hub_cache_dir()
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError as e:  # pragma: no cover - transformers brings it
        raise TuituneError(f"{repo_id}: reading a hub model needs huggingface_hub (pip install huggingface_hub)") from e
    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache)
    if isinstance(found, str) and os.path.isfile(found):
        return Path(found)
    download = f"download it once where the hub answers (`hf download {repo_id} config.json`), or give a local " \
               "model folder"
    if online is False or (online is None and hub_offline()):
        why = "while offline (HF_HUB_OFFLINE)" if online is None else "(not asked online yet)"
        raise TuituneError(f"{repo_id}: not a folder, and its config.json is not in the hub cache ({cache}) "
                           f"{why}; {download}")
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    timeout = _hub_timeout(HUB_TIMEOUT_S)
    head = f"{repo_id}: not a folder, not in the hub cache ({cache}), and the hub ({constants.ENDPOINT})"
    try:
        # One HEAD request (get_hf_file_metadata does not retry); hf_hub_download would retry a
        # network error five times, up to 8 s apart, before saying anything.
        get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=timeout)
    except GatedRepoError:
        raise TuituneError(f"{repo_id} is gated on the hub: accept its terms on {constants.ENDPOINT}/{repo_id} "
                           "and log in with `hf auth login`, or give a local model folder") from None
    except RepositoryNotFoundError:
        raise TuituneError(f"{head} has no such model (or it is private: log in with `hf auth login`); check "
                           "the id, or give a local model folder") from None
    except EntryNotFoundError:
        raise TuituneError(f"{repo_id} on the hub has no config.json, so it is not a transformers model; "
                           "give a local model folder") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise TuituneError(f"{head} answered HTTP {status} ({_in_one_line(e)}); try again later, or "
                           f"{download}") from None
    except Exception as e:  # noqa: BLE001 - refused, DNS, timeout: the hub is not there
        raise TuituneError(f"{head} {_no_answer(e, timeout)}; check the network (HF_ENDPOINT, a proxy), or "
                           f"{download}") from None
    try:
        return Path(hf_hub_download(repo_id, "config.json", cache_dir=cache, etag_timeout=timeout))
    except Exception as e:  # noqa: BLE001 - it answered a moment ago: say what it says now, whole
        raise TuituneError(f"{head} did not give its config.json ({_in_one_line(e)}); {download}") from None


def config_location(spec: str, workspace, online: bool | None) -> Path:
    """A model spec that is no path here, through the one resolver (``tuitune.sources.resolve``):
    a folder in the workspace, a run's or an adapter's base model, or a hub id's config.json."""
    from tuitune.sources import resolve

    try:
        base = resolve(spec, workspace).base
    except TuituneError as exc:
        if ":" in spec:
            raise
        try:  # a run with no adapter or checkpoint yet: the estimate needs only its base model
            base = resolve(f"{spec}:base", workspace).base
        except TuituneError:
            raise exc from None
    return Path(base) if Path(base).is_absolute() else hub_config_path(base, online)
