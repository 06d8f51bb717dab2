"""The Environment step as a user types it (#20 items 6 and 7).

`tuitune env --estimate` from a demo workspace, with the relative path a user types: a missing
local folder is refused at once, naming it and the workspace's models; a hub id with no hub is
asked once and fails in one whole line. The checks say what this box can do: on a CPU-only box a
warning and a rate for the demo's real model, not a FAIL; "hub online" only after the hub
answered. No test reaches beyond this machine: the "hub" is a closed port or a tiny HTTP server
on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error

TUITUNE = str(Path(sys.executable).with_name("tuitune"))


def tuitune(ws: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``tuitune ARGS`` typed in ``ws`` (the console script, cwd = ws)."""
    return subprocess.run([TUITUNE, *args], cwd=ws, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200", **(env or {})})


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """`tuitune demo DIR --no-open`: the sample workspace with models/tiny-chat."""
    root = tmp_path_factory.mktemp("env") / "envws"
    proc = subprocess.run([TUITUNE, "demo", str(root), "--no-open"], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return root


def closed_port() -> int:
    """A localhost port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_hub(tmp_path: Path) -> dict:
    """Online as far as huggingface_hub knows, with an empty cache and the hub at a closed port."""
    return {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_CACHE": "", "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}


# --- item 6: env --estimate ------------------------------------------------------------------------------

def test_a_missing_local_path_is_refused_at_once_naming_the_workspace_models(demo, tmp_path):
    """`models/missing` names a folder of the workspace (it has models/): no hub, no retries."""
    for typed in ("models/missing", "./models/missing", "models/tiny-chat/../missing"):
        start = time.monotonic()
        proc = tuitune(demo, "env", "--estimate", typed, env=no_hub(tmp_path))
        took = time.monotonic() - start
        line = assert_one_line_error(proc, f"{typed}: no such folder", "models in the workspace: models/tiny-chat")
        assert proc.stderr.strip() == line, proc.stderr  # nothing else: no "Retrying in 8s"
        assert took < 5, took
    # The folder that is there estimates, typed the same way, from the workspace or with -w from its parent.
    proc = tuitune(demo, "env", "--estimate", "models/tiny-chat", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n_params"] > 0
    proc = tuitune(demo.parent, "-w", demo.name, "env", "--estimate", "models/tiny-chat", "--json")
    assert proc.returncode == 0, proc.stderr
    n_params = json.loads(proc.stdout)["n_params"]
    # A run, through the same resolver: its base model, even before it has an adapter.
    run = demo / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text((demo / "configs" / "tiny-demo.yaml").read_text())
    (run / "state.json").write_text('{"status": "finished"}')
    try:
        for typed in ("r1", "r1:base"):
            proc = tuitune(demo, "env", "--estimate", typed, "--json")
            assert proc.returncode == 0, proc.stderr
            assert json.loads(proc.stdout)["n_params"] == n_params
        assert_one_line_error(tuitune(demo, "env", "--estimate", "r2"), "r2: no such folder", "no run 'r2'")
    finally:
        shutil.rmtree(run)


def test_a_hub_id_with_no_hub_fails_once_in_one_whole_line(demo, tmp_path):
    env = no_hub(tmp_path)
    start = time.monotonic()
    proc = tuitune(demo, "env", "--estimate", "nobody/nothing-7b", env=env)
    took = time.monotonic() - start
    line = assert_one_line_error(proc, "nobody/nothing-7b", env["HF_ENDPOINT"], "could not be reached",
                                 "connection refused")
    assert proc.stderr.strip() == line, proc.stderr  # asked once: no retry warnings
    assert took < 5, took
    # Whole: the message ends as it was written, nothing cut off mid-word.
    assert line.endswith("or give a local model folder"), line
    assert "…" not in line and "aga)" not in line, line


class FakeHub(http.server.BaseHTTPRequestHandler):
    """A hub on 127.0.0.1 that knows one model, ``org/tiny``, whose config.json is ``CONFIG``."""

    CONFIG = b""
    requests: list[str] = []

    def _answer(self, body: bool) -> None:
        FakeHub.requests.append(f"{self.command} {self.path}")
        if self.path == "/":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path.startswith("/org/tiny/resolve/main/config.json"):
            self.send_response(200)
            self.send_header("X-Repo-Commit", "a" * 40)
            self.send_header("ETag", '"c0ffee"')
            self.send_header("Content-Length", str(len(self.CONFIG)))
            self.end_headers()
            if body:
                self.wfile.write(self.CONFIG)
        else:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

    def do_HEAD(self):  # noqa: N802 - http.server's names
        self._answer(False)

    def do_GET(self):  # noqa: N802
        self._answer(True)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(tiny_model):
    FakeHub.CONFIG = (tiny_model / "config.json").read_bytes()
    FakeHub.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_hub_that_answers_gives_the_config_and_names_a_model_it_lacks(demo, tmp_path, fake_hub):
    env = {**no_hub(tmp_path), "HF_ENDPOINT": fake_hub}
    proc = tuitune(demo, "env", "--estimate", "org/tiny", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n_params"] > 0
    assert list((tmp_path / "hf" / "hub").glob("models--org--tiny/snapshots/*/config.json"))  # now cached
    line = assert_one_line_error(tuitune(demo, "env", "--estimate", "org/nothing", env=env),
                                 "org/nothing", "has no such model")
    assert line.endswith("or give a local model folder"), line


# --- item 7: what the checks say ---------------------------------------------------------------------------

def check_in_child(code: str, env: dict) -> dict:
    """Run ``code`` (which prints one check's dict as JSON) in a fresh process with ``env``: the hub's
    endpoint is read when huggingface_hub is imported."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


HF_CACHE_ROW = ("import json; from tuitune.doctor import check_hf_cache; (row,) = check_hf_cache(); "
                "print(json.dumps(row.to_dict()))")


def test_hf_cache_says_offline_when_the_hub_does_not_answer(tmp_path):
    start = time.monotonic()
    row = check_in_child(HF_CACHE_ROW, no_hub(tmp_path))
    assert time.monotonic() - start < 10
    assert row["status"] == "warn", row
    assert "hub not reachable (offline): models must be local or cached" in row["detail"], row
    assert "online" not in row["detail"].replace("offline", ""), row
    assert "HF_ENDPOINT" in row["fix"], row


def test_hf_cache_waits_about_two_seconds_for_a_hub_that_never_answers(tmp_path):
    """A port that takes the connection and says nothing: one request, cut off by the timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        env = {**no_hub(tmp_path), "HF_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        start = time.monotonic()
        row = check_in_child(HF_CACHE_ROW, env)
        took = time.monotonic() - start
    assert row["status"] == "warn" and "did not answer within 2 s" in row["detail"], row
    assert 2 <= took < 10, took


def test_hf_cache_says_online_only_after_the_hub_answered(tmp_path, fake_hub):
    row = check_in_child(HF_CACHE_ROW, {**no_hub(tmp_path), "HF_ENDPOINT": fake_hub})
    assert row["status"] == "ok" and f"hub online ({fake_hub} answered)" in row["detail"], row
    assert FakeHub.requests == ["HEAD /"]
    # Offline as asked: no request at all, and it says so.
    FakeHub.requests = []
    row = check_in_child(HF_CACHE_ROW, {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": fake_hub})
    assert row["status"] == "ok" and "hub offline as asked (HF_HUB_OFFLINE)" in row["detail"], row
    assert FakeHub.requests == []


def test_a_cpu_box_says_what_it_can_do_not_fail():
    """On a box without a GPU (this one): cuda is a warning that names what needs a GPU, and the cpu
    row gives a rate for the demo's real model from matmuls timed here, in the precision auto picks."""
    torch = pytest.importorskip("torch")
    from tuitune import doctor
    from tuitune.config.presets import get_preset

    if torch.cuda.is_available() or doctor.nvml() is not None:
        pytest.skip("a GPU box: the cpu row is for boxes without one")
    report = doctor.Report()
    rows = {c.name: c for c in doctor.check_torch_and_gpus(report)}
    cuda = rows["cuda"]
    assert cuda.status == "warn", cuda
    assert "only the tiny demo model" not in cuda.detail
    assert "SmolLM2-135M" in cuda.detail and doctor.NEEDS_GPU in cuda.detail
    for needs in ("7B LoRA/QLoRA", "bitsandbytes 4-bit", "DeepSpeed"):
        assert needs in cuda.detail
    (cpu,) = doctor.check_cpu_training(report)
    assert cpu.status in ("ok", "warn"), cpu
    demo = get_preset("smol-demo")
    tokens = demo.training.max_steps * demo.training.batch_size * demo.data.max_length
    # The suite pins what auto picks to fp32 (conftest), so the matmuls were timed in fp32.
    for words in ("LoRA trains the demo's SmolLM2-135M at about", "tokens/s here in fp32", "timed just now at",
                  f"the smol-demo run ({tokens:,} tokens) takes about", "a 7B model's LoRA", "use a GPU"):
        assert words in cpu.detail, (words, cpu.detail)


def test_the_cpu_rate_is_the_models_flops_over_the_timed_matmuls():
    pytest.importorskip("torch")
    from tuitune.vram import shape_from_config
    from tuitune.vram.speed import DEMO_REAL_MODEL, cpu_lora_rate, lora_flops_per_token

    shape = shape_from_config(DEMO_REAL_MODEL)
    assert 134e6 < shape.n_params < 135e6  # SmolLM2-135M, tied embeddings
    per_token = lora_flops_per_token(shape, 128)
    # 4 FLOPs per weight of the decoder's linears and the lm_head, plus causal attention.
    assert per_token == 4 * (shape.linear_params + 576 * 49152) + 6 * 128 * 576 * 30
    rate = cpu_lora_rate("fp32", 128)
    assert rate.gflops > 0 and rate.flops_per_token == per_token
    assert rate.tokens_per_s == pytest.approx(rate.gflops * 1e9 / per_token)
    assert rate.tokens_per_s_7b < rate.tokens_per_s / 40


async def test_the_estimate_tab_names_a_missing_folder_as_typed_and_enter_asks_no_hub(workspace, tiny_model):
    from conftest import widget_text
    from test_app import make_app

    shutil.copytree(tiny_model, workspace / "models" / "tiny-chat")
    app = make_app(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.press("v")
        await pilot.pause()
        field = app.screen.query_one("#est-model")
        assert field.value == "models/tiny-chat"
        field.value = "models/missing"
        await pilot.pause()
        out = widget_text(app.screen.query_one("#env-estimate"))
        assert out.startswith("models/missing: no such folder"), out
        assert "models in the workspace: models/tiny-chat" in " ".join(out.split()), out
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not [w for w in app.workers if w.group == "hub-estimate"]
        assert widget_text(app.screen.query_one("#env-estimate")) == out


def test_the_estimate_says_which_loss_it_counts_and_kernels_none_holds_the_logits(demo):
    """`env --estimate` estimates an sft run as tuitune runs it (kernels: auto, the loss in chunks);
    `--kernels none` counts the whole (tokens x vocabulary) logits, as such a run holds them."""
    out = {}
    for kernels in ("auto", "none"):
        proc = tuitune(demo, "env", "--estimate", "models/tiny-chat", "--max-length", "1024", "--kernels", kernels)
        assert proc.returncode == 0, proc.stderr
        out[kernels] = proc.stdout
    assert "checkpointing on, loss in chunks, 1 GPU(s)" in out["auto"]
    assert "checkpointing on, whole logits, 1 GPU(s)" in out["none"]
    figures = {k: json.loads(tuitune(demo, "env", "--estimate", "models/tiny-chat", "--max-length", "8192",
                                     "--batch-size", "8", "--kernels", k, "--json").stdout)["parts"]["logits"]
               for k in ("auto", "none")}
    assert figures["none"] == pytest.approx(figures["auto"] * 10 / 3, rel=0.01), figures
    assert_one_line_error(tuitune(demo, "env", "--estimate", "models/tiny-chat", "--kernels", "fast"),
                          "--kernels", "auto", "liger", "none")


def test_env_estimate_offers_the_configs_kernels_choices():
    """`env --estimate --kernels` keeps its own tuple (no config import at `tuitune --help`): it must be
    the config field's choices."""
    import typing

    from tuitune.commands.env import KERNELS
    from tuitune.config.schema import TrainingConfig

    assert KERNELS == typing.get_args(TrainingConfig.model_fields["kernels"].annotation)
