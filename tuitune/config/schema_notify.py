"""The run config's ``notify:`` section: who hears about the run (Apprise URLs), about what, and what
else the run may send out.

Its own module so that schema.py stays one screen of sections; pydantic only, like the schema. The
URLs are checked by :func:`tuitune.notify.url_problem` (apprise is imported only when there are
URLs to check): a secret written out in a URL, or a scheme Apprise does not know, is refused here, so
no config that holds one loads, is shown or is frozen into a run.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tuitune.notify import DEFAULT_EVENTS, EVENTS  # standard library only at import: the schema stays light


def _check_urls(urls: list[str]) -> list[str]:
    out = [u.strip() for u in urls if u.strip()]
    if out:
        from tuitune.notify import url_problem

        for i, url in enumerate(out, 1):
            problem = url_problem(url)
            if problem:
                raise ValueError(f"entry {i}: {problem}")
    return out


class NotifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    urls: Annotated[list[str], AfterValidator(_check_urls)] = Field(
        default_factory=list,
        description="Apprise URLs told when the run ends, fails or stalls: ntfy://ntfy.sh/TOPIC, "
                    "tgram://${TG_TOKEN}/CHAT_ID, json://HOST/PATH ...; a token or password is written "
                    "${NAME}, read from the environment or secrets_file when a message is sent")
    events: list[Literal[EVENTS]] = Field(
        default_factory=lambda: list(DEFAULT_EVENTS),
        description="what the urls hear about: ended (the run finished, failed or stopped; or name some of "
                    "those alone), stalled, and evaluation (each evaluation's loss)")
    secrets_file: Optional[str] = Field(
        None, description="a file of NAME=value lines (mode 0600) for the ${NAME}s of the urls, read when "
                          "a message is sent; relative paths are in the workspace; empty: the environment only")
    stall_minutes: float = Field(
        10, gt=0, description="a run with no step for this many minutes past its slowest step so far is "
                              "stalled: an event, a state field and (events: stalled) a message")
    telemetry: bool = Field(
        False, description="let the training libraries send their usage telemetry to the Hugging Face hub "
                           "(TRL's trainers do when online); off: the run sets HF_HUB_DISABLE_TELEMETRY=1")
