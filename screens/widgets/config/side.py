"""The Config step's side panel: help for the focused field, the VRAM estimate, the diff
against the preset, and the checks of files and this machine.

The estimate and the machine checks run in thread workers (the first GPU query may
import torch); each posts its result as a message to the panel and is started again
only when a field it looks at changes (the caller passes those fields' values as a key).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static
from textual.worker import Worker, get_current_worker

from screens.workers import failure
from tuitune.config import ERROR, RunConfig, check_files, describe, diff_against
from tuitune.errors import TuituneError


class ConfigSide(VerticalScroll):
    """``show_help``, ``show_diff`` and ``show_checks`` draw; ``estimate`` and ``check_machine`` start workers."""

    @dataclass
    class VramReady(Message):
        text: str

    @dataclass
    class ChecksReady(Message):
        issues: list = field(default_factory=list)
        mix: list = field(default_factory=list)     # MixRow per training file, for a mix of several

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.machine_issues: list = []
        self.machine_checked = False
        self._vram_key = None
        self._check_key = None
        self._checked_cfg: RunConfig | None = None  # the config the checks shown are about
        self.mix: list = []

    def compose(self) -> ComposeResult:
        yield Static("", id="cfg-help")
        yield Static("VRAM estimate …", id="cfg-vram")
        yield Static("", id="cfg-diff")
        yield Static("", id="cfg-issues")

    def show_help(self, name: str | None, text: str | None = None) -> None:
        """Help for the schema field ``name``, else ``text`` (a tooltip); neither: leave it."""
        if name:
            put_markup(self.query_one("#cfg-help", Static), f"[b]{name}[/]\n{escape(describe(name))}")
        elif text:
            put_markup(self.query_one("#cfg-help", Static), escape(text))

    def show_diff(self, cfg: RunConfig | None) -> None:
        diff_box = self.query_one("#cfg-diff", Static)
        if cfg is None:
            put_markup(diff_box, "")
            return
        base = cfg.preset or "defaults"
        rows = diff_against(cfg)
        if not rows:
            put_markup(diff_box, f"[b]Diff[/] same as {base}")
            return
        lines = [f"[b]Diff[/] against {base}"]
        for name, a, b in rows[:12]:
            lines.append(f" {name}: {_short(a)} → {_short(b)}")
        if len(rows) > 12:
            lines.append(f" … {len(rows) - 12} more")
        put_markup(diff_box, "\n".join(lines))

    def show_checks(self, cfg: RunConfig | None) -> None:
        """The files' checks now, and this machine's as last found."""
        box = self.query_one("#cfg-issues", Static)
        self._checked_cfg = cfg
        if cfg is None:
            put_markup(box, "")
            return
        issues = check_files(cfg)
        seen = {(i.field, i.message) for i in issues}
        issues += [i for i in self.machine_issues if (i.field, i.message) not in seen]
        if not issues:
            done = "files and this machine ok" if self.machine_checked else "files ok; checking this machine…"
            mix = [f" {escape(r.line())}" for r in self.mix] if self.machine_checked else []
            put_markup(box, "\n".join([f"[b]Checks[/] [green]{done}[/] (ctrl+r: again)"]
                                      + (["[b]Mix[/] records and tokens per file"] + mix if mix else [])))
            return
        lines = ["[b]Checks[/]"]
        for i in issues:
            style = "red" if i.level == ERROR else "yellow"
            lines.append(f"[{style}]{i.level}[/] {i.field}: {escape(i.message)}")
        put_markup(box, "\n".join(lines))

    # --- the workers ----------------------------------------------------------------------

    def check_machine(self, cfg: RunConfig, key=None) -> None:
        """Check ``cfg`` against this machine, unless ``key`` is the one checked last (None: always)."""
        if key is not None:
            if key == self._check_key:
                return
            self._check_key = key
        self.machine_issues, self.machine_checked = [], False
        self.run_checks(cfg)

    def forget_checks(self) -> None:
        """The next :meth:`check_machine` runs whatever its key (a config was loaded)."""
        self._check_key = None

    def estimate(self, cfg: RunConfig, key) -> None:
        """Estimate the VRAM ``cfg`` needs, unless ``key`` is the one estimated last."""
        if key == self._vram_key:
            return
        self._vram_key = key
        self.estimate_vram(cfg)

    @work(thread=True, exclusive=True, exit_on_error=False, group="config-check",
          description="checking the config against this machine")
    def run_checks(self, cfg: RunConfig) -> None:
        from tuitune.config import check_config

        issues = check_config(cfg)
        mix = []
        if not any(i.level == ERROR for i in issues) and len(cfg.data.sources()) > 1:
            from tuitune.train.build import describe_mix

            mix = describe_mix(cfg)   # tokenizes each file into the cache the run reuses
        if not get_current_worker().is_cancelled:  # a newer check replaced this one
            self.post_message(self.ChecksReady(issues, mix))

    def on_config_side_checks_ready(self, message: ChecksReady) -> None:
        self.machine_issues, self.machine_checked, self.mix = message.issues, True, message.mix
        self.show_checks(self._checked_cfg)

    @work(thread=True, exclusive=True, exit_on_error=False, group="config-vram",
          description="estimating VRAM")
    def estimate_vram(self, cfg: RunConfig) -> None:
        text = vram_text(cfg, free_gib())
        if not get_current_worker().is_cancelled:
            self.post_message(self.VramReady(text))

    def on_config_side_vram_ready(self, message: VramReady) -> None:
        put_markup(self.query_one("#cfg-vram", Static), message.text)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if (error := failure(event)) is not None:
            target = "#cfg-vram" if event.worker.group == "config-vram" else "#cfg-issues"
            put_markup(self.query_one(target, Static), f"[red]{escape(error)}[/]")


_FREE: list[float] | None = None


def free_gib() -> list[float]:
    """Free memory of each visible GPU (asked once: on a box without NVML it imports torch)."""
    global _FREE
    if _FREE is None:
        from tuitune.doctor import gpu_inventory

        _FREE = [g.free_gib for g in gpu_inventory()]
    return _FREE


def vram_text(cfg: RunConfig, free: list[float]) -> str:
    """The estimate for this config and what to do if it does not fit (markup)."""
    from tuitune import vram

    try:
        est = vram.estimate_for_config(cfg)
        advice = vram.advise(est, free)
    except TuituneError as exc:
        return f"[b]VRAM[/] [red]{escape(str(exc))}[/]"
    parts = ", ".join(f"{k} {v:.2f}" for k, v in est.parts.items())
    style = "green" if advice.fits else "red" if advice.fits is False else "yellow"
    text = [f"[b]VRAM[/] ≈ [b]{est.total_gib:.2f} GiB[/] per GPU", f"[dim]{escape(parts)}[/]",
            f"[{style}]{escape(advice.message)}[/]"]
    for s in advice.suggestions[:3]:
        text.append(f" • {escape(s)}")
    return "\n".join(text)


def put_markup(widget: Static, text: str) -> None:
    """Update a Static only when its text changes (an update costs a layout pass)."""
    if getattr(widget, "_cfg_text", None) != text:
        widget._cfg_text = text  # type: ignore[attr-defined]
        widget.update(text)


def _short(value, width: int = 28) -> str:
    """A value for the diff, at most ``width`` cells: a path is cut in the middle so its file name's
    end and extension stay ("data/MedInfo20…s-train.jsonl"); other values at the end."""
    import json

    from screens.widgets.text import shorten_middle

    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, str) and " " not in value and ("/" in value or "." in value.rpartition("/")[2][1:]):
        return escape(shorten_middle(value, width))
    return escape(text if len(text) <= width else text[: width - 1] + "…")
