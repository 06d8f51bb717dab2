"""Rich renderables shared by the CLI and the TUI (rich, not textual: the engine stays headless)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}
STATUS_MARK = {"ok": "ok", "warn": "warn", "fail": "FAIL"}


def status_text(status: str) -> Text:
    return Text(STATUS_MARK.get(status, status), style=STATUS_STYLE.get(status, ""))


def checks_table(checks) -> Table:
    table = Table(show_lines=False, expand=True, title="tuitune env")
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("found", ratio=3, overflow="fold")  # a long path folds onto the next line, never cut
    table.add_column("what to do", ratio=3, overflow="fold")
    for c in checks:
        table.add_row(status_text(c.status), c.name, c.detail, c.fix)
    return table


def estimate_settings(est) -> str:
    ds = f", {est.deepspeed}" if getattr(est, "deepspeed", None) else ""
    return (f"{est.method}, max length {est.max_length}, batch {est.batch_size}, "
            f"checkpointing {'on' if est.gradient_checkpointing else 'off'}, "
            f"{'loss in chunks' if est.chunked_loss else 'whole logits'}, {est.gpus} GPU(s){ds}; "
            f"{est.n_params / 1e6:,.1f} M parameters, {est.trainable_params / 1e6:,.2f} M trainable")


def estimate_table(est) -> Table:
    table = Table(expand=False)
    table.add_column("part")
    table.add_column("GiB per GPU", justify="right")
    for name, gib in est.parts.items():
        table.add_row(name, f"{gib:.2f}")
    table.add_row(Text("total", style="bold"), Text(f"{est.total_gib:.2f}", style="bold"))
    return table


RUN_STATUS_STYLE = {"starting": "cyan", "running": "bold cyan", "stopping": "yellow", "stopped": "yellow",
                    "finished": "green", "failed": "bold red", "stalled": "bold yellow"}
