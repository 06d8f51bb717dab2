"""Hear about it (#23 item 3): notify: sends a real run's summary line to Apprise URLs (here a receiver on
127.0.0.1: no test reaches beyond the machine), a stall is an event and a message, secrets never leave
the environment or the secrets file, and a run sends nothing else unasked."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from train_helpers import events, make_workspace, state, wait_until, write_config

SECRET = "s3cr3t-Pa55word-h8"


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every POST (what Apprise's json:// sends)."""

    def __init__(self):
        self.messages: list[dict] = []
        received = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                 **json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def titled(self, word: str) -> list[dict]:
        return [m for m in self.messages if m["title"].endswith(f" {word}")]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ws(tmp_path, tiny_model) -> Path:
    return make_workspace(tmp_path / "ws", tiny_model)


def everything_in(folder: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in folder.rglob("*")
                     if p.is_file() and p.suffix in ("", ".yaml", ".json", ".jsonl", ".log"))


# --- real runs ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_finished_run_is_heard_and_an_unreachable_receiver_is_a_warning(ws, receiver):
    """The finished message carries the summary line (and an evaluation's, asked for); the password comes from the secrets file at send
    time and is nowhere in the run folder, its log or `config show`; a dead receiver is a warning."""
    secrets = ws / "notify.env"
    secrets.write_text(f"# for notify.urls\nH8_PW={SECRET}\n", encoding="utf-8")
    secrets.chmod(0o600)
    dead = closed_port()
    cfg = write_config(ws, "heard", **{
        "training.max_steps": 3, "training.logging_steps": 1, "training.save_steps": 100,
        "data.eval": "data/self_cognition.jsonl", "evaluation.every": 2, "evaluation.eval_loss": True,
        "notify.events": ["ended", "evaluation"],
        "notify.urls": [f"json://tuitune:${{H8_PW}}@127.0.0.1:{receiver.port}/hook",
                        f"json://127.0.0.1:{dead}/nobody"],
        "notify.secrets_file": "notify.env"})
    check = run_cli("-w", ws, "config", "check", cfg)
    assert check.returncode == 0, check.stderr
    show = run_cli("-w", ws, "config", "show", cfg)
    assert "${H8_PW}" in show.stdout and SECRET not in show.stdout + show.stderr

    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "heard", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = ws / "runs" / "heard"
    assert state(run)["status"] == "finished"
    [msg] = receiver.titled("finished")
    assert msg["title"] == "tuitune: run heard finished" and msg["path"] == "/hook"
    line = msg["message"]
    assert line.startswith("run heard finished at step 3/3: loss ") and " tok/s" in line, line
    assert line.endswith(f"; output {run / 'adapter'}") and " tokens in " in line, line
    evaluations = [m["message"] for m in receiver.titled("evaluation")]  # each evaluation, when asked for
    assert evaluations[0].startswith("run heard at step 2/3: loss ") and ", eval loss " in evaluations[0], evaluations
    assert len(evaluations) == len(events(run, "eval"))
    assert base64.b64decode(msg["auth"].split()[1]).decode() == f"tuitune:{SECRET}"  # filled in when sent
    log = (run / "train.log").read_text(encoding="utf-8")
    assert f"warning: notification (finished) to json://127.0.0.1:{dead}/nobody was not sent" in log, log[-2000:]
    assert "hub telemetry off (HF_HUB_DISABLE_TELEMETRY=1)" in log
    assert "${H8_PW}" in (run / "config.yaml").read_text(encoding="utf-8")
    assert SECRET not in everything_in(run) + proc.stdout + proc.stderr


REWARD = """\
import time
from pathlib import Path

calls = 0


def slow_then_broken(completions, **kwargs):
    # Step 2 hangs (a verifier that does not answer) until the test lets it go; step 3 raises.
    global calls
    calls += 1
    if calls == 2:
        deadline = time.time() + 240
        while not Path({release!r}).exists() and time.time() < deadline:
            time.sleep(0.05)
    if calls == 3:
        raise RuntimeError("the verifier is down")
    return [0.0] * len(completions)
"""
GRPO = """\
model: models/tiny-chat
task: grpo
method: lora
data: {{train: data/prompts.jsonl, max_length: 128, pack: false}}
lora: {{r: 8, alpha: 16, dropout: 0.0}}
training: {{max_steps: 3, batch_size: 2, grad_accum: 1, gradient_checkpointing: false, precision: fp32,
           save_steps: 2, logging_steps: 1}}
grpo: {{num_generations: 2, max_completion_length: 4, rewards: [verifier.py:slow_then_broken]}}
evaluation: {{prompts: [], eval_loss: false}}
notify:
  urls: ['json://tuitune:${{H8_TOKEN}}@127.0.0.1:{port}/run']
  stall_minutes: 0.01
"""


@pytest.mark.slow
def test_a_stalled_then_failed_run_is_heard(ws, receiver):
    """A step that hangs: a `stalled` event, state field and message; `resumed progress` when it returns;
    then the run fails, and the message says why and how to resume (from the checkpoint it kept)."""
    release = ws / "release"
    (ws / "verifier.py").write_text(REWARD.format(release=str(release)), encoding="utf-8")
    (ws / "data" / "prompts.jsonl").write_text("".join(
        json.dumps({"prompt": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(8)))
    (ws / "configs" / "hang.yaml").write_text(GRPO.format(port=receiver.port), encoding="utf-8")
    env = {**os.environ, "H8_TOKEN": SECRET}
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "tuitune", "-w", str(ws), "train", "configs/hang.yaml",
                             "--foreground", "--name", "hang"], cwd=ws, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = ws / "runs" / "hang"
    try:
        stalled = wait_until(lambda: [e for e in events(run, "lifecycle") if e["event"] == "stalled"
                                      and e["step"] == 1], timeout=300, what="the stalled event at step 1")
        assert stalled[0]["idle"] > stalled[0]["slowest_step"] and state(run)["stalled_since"] == stalled[0]["since"]
        msg = wait_until(lambda: [m for m in receiver.titled("stalled") if "at step 1/3" in m["message"]],
                         timeout=60, what="the stalled message")[0]
        assert msg["message"].startswith("no step for ") and "tuitune runs stop hang --kill" in msg["message"]
        release.touch()
        out, err = proc.communicate(timeout=300)
    finally:
        release.touch()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    back = [e for e in events(run, "lifecycle") if e["event"] == "resumed progress"]
    assert back and back[-1]["stalled_for"] > 0
    st = state(run)
    assert st["status"] == "failed" and "the verifier is down" in st["error"] and st.get("stalled_since") is None
    [failed] = receiver.titled("failed")
    line = failed["message"]
    assert line.startswith("run hang failed at step ") and "error: reward verifier.py:slow_then_broken failed" in line, line
    assert "RuntimeError: the verifier is down" in line
    assert line.endswith("resume with `tuitune runs resume hang` (from checkpoint-2)"), line
    assert SECRET not in everything_in(run) + out + err


# --- the config -------------------------------------------------------------------------------------

def test_a_secret_written_in_a_url_is_refused_with_one_line(workspace):
    (workspace / "configs" / "leak.yaml").write_text(
        f"model: org/model\nnotify:\n  urls:\n  - ntfy://ntfy.sh/mine\n  - json://me:{SECRET}@example.org/hook\n",
        encoding="utf-8")
    for verb in ("check", "show"):
        proc = run_cli("config", verb, "configs/leak.yaml", cwd=workspace)
        line = assert_one_line_error(proc, "line 3", "notify.urls", "entry 2", "password of this json:// URL",
                                     "${JSON_PASSWORD}", "export JSON_PASSWORD=", "notify.secrets_file")
        assert SECRET not in proc.stdout + proc.stderr, line
    proc = run_cli("train", "configs/leak.yaml", cwd=workspace)
    assert proc.returncode == 2 and SECRET not in proc.stderr and not any((workspace / "runs").iterdir())
    (workspace / "configs" / "tg.yaml").write_text(
        "model: org/model\nnotify: {urls: ['tgram://123456789:AAH-secret-token/42']}\n", encoding="utf-8")
    proc = run_cli("config", "check", "configs/tg.yaml", cwd=workspace)
    assert_one_line_error(proc, "bot_token", "${TGRAM_BOT_TOKEN}")
    assert "AAH-secret-token" not in proc.stderr


def test_an_unknown_scheme_lists_apprises(workspace):
    (workspace / "configs" / "odd.yaml").write_text("model: org/model\nnotify: {urls: ['tgrm://x/y']}\n",
                                                     encoding="utf-8")
    assert_one_line_error(run_cli("config", "check", "configs/odd.yaml", cwd=workspace),
                          "unknown scheme tgrm://", "did you mean tgram://", "apprise knows:", "ntfy", "json",
                          "mailto", "discord", "slack")


def test_the_secrets_file_is_private_and_a_missing_variable_is_said(workspace):
    (workspace / "data").mkdir(exist_ok=True)
    secrets = workspace / "secrets.env"
    secrets.write_text("export NTFY_TOKEN='tk_abc123'\n", encoding="utf-8")
    secrets.chmod(0o644)
    (workspace / "configs" / "s.yaml").write_text(
        "model: org/model\nnotify:\n  urls: ['ntfy://${NTFY_TOKEN}@ntfy.sh/topic', 'json://u:${NOWHERE_SET}@h/']\n"
        "  secrets_file: secrets.env\n", encoding="utf-8")
    proc = run_cli("config", "check", "configs/s.yaml", "--no-machine", cwd=workspace)
    assert "notify.secrets_file" in proc.stderr and "chmod 600" in proc.stderr and "tk_abc123" not in proc.stderr
    secrets.chmod(0o600)
    proc = run_cli("config", "check", "configs/s.yaml", "--no-machine", "--json", cwd=workspace)
    issues = [i for i in json.loads(proc.stdout)["issues"] if i["field"].startswith("notify")]
    assert [(i["level"], i["field"]) for i in issues] == [("warn", "notify.urls")], issues
    assert "entry 2: ${NOWHERE_SET} has no value here" in issues[0]["message"]
    from tuitune.notify import expand, lookup

    assert expand("ntfy://${NTFY_TOKEN}@ntfy.sh/t", lookup(secrets, {}))[0] == "ntfy://tk_abc123@ntfy.sh/t"
    assert expand("ntfy://${NTFY_TOKEN}@ntfy.sh/t", lookup(secrets, {"NTFY_TOKEN": "env"}))[0] == "ntfy://env@ntfy.sh/t"


def test_telemetry_is_off_unless_the_config_asks(monkeypatch):
    import huggingface_hub.constants as constants

    from tuitune.config import get_preset
    from tuitune.notify import keep_telemetry_off, notify_settings

    monkeypatch.delenv("HF_HUB_DISABLE_TELEMETRY", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", False)
    cfg = get_preset("tiny-demo")
    cfg.notify.telemetry = True
    assert keep_telemetry_off(notify_settings(cfg)) is True and "HF_HUB_DISABLE_TELEMETRY" not in os.environ
    cfg.notify.telemetry = False
    assert keep_telemetry_off(notify_settings(cfg)) is False
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1" and constants.HF_HUB_DISABLE_TELEMETRY is True


def test_events_name_the_ends_together_or_alone():
    from tuitune.config import get_preset
    from tuitune.notify import notify_settings

    cfg = get_preset("tiny-demo")
    cfg.notify.urls = ["ntfy://ntfy.sh/topic"]
    wants = lambda: [e for e in ("finished", "failed", "stopped", "stalled", "evaluation")  # noqa: E731
                     if notify_settings(cfg).wants(e)]
    assert wants() == ["finished", "failed", "stopped", "stalled"]  # the default: ended, stalled
    cfg.notify.events = ["failed", "stalled"]
    assert wants() == ["failed", "stalled"]
    cfg.notify.events = ["ended", "evaluation"]
    assert wants() == ["finished", "failed", "stopped", "evaluation"]
    cfg.notify.urls = []
    assert wants() == []


def test_env_lists_what_a_run_may_send_out(workspace):
    from tuitune.doctor import check_sends

    (workspace / "configs" / "quiet.yaml").write_text("model: org/model\n", encoding="utf-8")
    rows = {c.name: c.detail for c in check_sends(workspace)}
    assert set(rows) == {"sends: hub", "sends: trackers", "sends: notify", "sends: telemetry"}
    assert rows["sends: notify"].startswith("off") and rows["sends: telemetry"].startswith("off")
    assert rows["sends: hub"].startswith("off: HF_HUB_OFFLINE")  # the suite runs offline
    (workspace / "configs" / "loud.yaml").write_text(
        "model: org/model\nnotify: {urls: ['ntfy://ntfy.sh/${TOPIC}'], telemetry: true}\n", encoding="utf-8")
    rows = {c.name: c.detail for c in check_sends(workspace)}
    assert rows["sends: notify"] == "on: configs/loud.yaml tells ntfy://ntfy.sh/${TOPIC} (ended, stalled)"
    assert rows["sends: telemetry"].startswith("on in configs/loud.yaml")


# --- the Config screen --------------------------------------------------------------------------------

async def test_the_config_screen_shows_the_url_without_the_secret(workspace, monkeypatch):
    monkeypatch.setenv("H8_PW", SECRET)
    (workspace / "configs" / "n.yaml").write_text(
        "model: org/model\nnotify: {urls: ['json://me:${H8_PW}@127.0.0.1:9/hook']}\n", encoding="utf-8")
    from screens.app import TuituneApp

    app = TuituneApp(workspace, start="config")
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        field = app.screen.query_one("#f-notify-urls")  # a TextArea: one URL a line
        assert field.text == "json://me:${H8_PW}@127.0.0.1:9/hook"
        assert SECRET not in app.export_screenshot()
        field.focus()
        field.text = ""
        await pilot.press(*"json://me:hunter2@127.0.0.1:9/hook")
        await pilot.pause()
        row = next(f for f in app.screen.fields() if f.field_name == "notify.urls")
        error = str(row.query_one(".cfg-error").render())
        assert row.has_class("-invalid") and "${JSON_PASSWORD}" in error and "hunter2" not in error
        assert app.screen.query_one("#cfg-save").disabled


def test_a_resumed_run_starts_unstalled(tmp_path):
    """A session killed while stalled leaves stalled_since in state.json; the next session's watchdog
    takes it back when training begins (no reader shows a running run as stalled from before)."""
    from types import SimpleNamespace

    from tuitune.train.runfolder import RunFolder
    from tuitune.train.watchdog import Watchdog

    run = RunFolder(tmp_path / "r")
    run.path.mkdir()
    run.write_state(status="running", stalled_since=123.0)
    watch = Watchdog(run, None, stall_seconds=600)
    watch.on_train_begin(None, SimpleNamespace(global_step=4), None)
    try:
        assert run.read_state()["stalled_since"] is None
    finally:
        watch.close()
    assert not [e for e in events(run.path) if e.get("event") in ("stalled", "resumed progress")]
