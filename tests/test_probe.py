"""``tuitune train CONFIG --probe`` (#23 item 1) and a run that runs out of memory (#23 item 2), on the tiny
model, through the console script from inside a workspace with relative paths, as a user types them.

CUDA cannot run out of memory on a CPU box: the ladder's tests cap the probe's memory with --max-memory
(the probe's worker raises torch.OutOfMemoryError past it), and the mid-run test sets the worker's
test-only hook TUITUNE_TEST_OOM_AT_STEP (torch.OutOfMemoryError as that step begins).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, assert_one_line_error
from train_helpers import make_workspace, state, write_config

TUITUNE = shutil.which("tuitune")
#: Packed rows of 1024 tokens, 8 a batch: the logits and activations outweigh the tiny model, so halving
#: the batch is seen in the peak RSS.
BIG = {"training.max_steps": 10, "data.pack": True, "data.max_length": 1024, "training.batch_size": 8,
       "data.eval": "data/held.jsonl", "evaluation.eval_loss": True, "evaluation.every": 5}


def tuitune(ws: Path, line: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([TUITUNE, *line.split()], cwd=ws, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def probe_json(ws: Path) -> dict:
    folders = list((ws / "probes").iterdir())
    assert len(folders) == 1, folders
    assert [p.name for p in folders[0].iterdir()] == ["probe.json"]   # nothing else: no rung folder, no checkpoint
    return json.loads((folders[0] / "probe.json").read_text())


@pytest.fixture(scope="module")
def ws(tiny_model, tmp_path_factory) -> Path:
    root = make_workspace(tmp_path_factory.mktemp("probe") / "ws", tiny_model)
    lines = (root / "data" / "self_cognition.jsonl").read_text().splitlines(keepends=True)
    (root / "data" / "held.jsonl").write_text("".join(lines[:16]))
    write_config(root, "big", **BIG)
    return root


@pytest.fixture(scope="module")
def fitted(ws) -> tuple[subprocess.CompletedProcess, dict]:
    """The big config probed as it is (it fits): the output and its probe.json."""
    proc = tuitune(ws, "train configs/big.yaml --probe --warmup 1 --steps 2")
    data = probe_json(ws)
    shutil.rmtree(ws / "probes")
    return proc, data


def test_probe_says_it_fits_with_the_eta_and_the_estimate(fitted, ws):
    proc, data = fitted
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    out = proc.stdout
    assert "timed steps on the longest batch (" in out and ", the longest 1024)" in out
    assert "peak RSS" in out and "(free RAM): fits" in out
    assert "one evaluation round: eval loss " in out and ", sample answers " in out
    assert "ETA of the whole run: start " in out and "10 steps × " in out
    assert "2 eval-loss rounds × " in out and "3 sample rounds × " in out   # at 5 and 10; before, at 5, after
    assert "estimate " in out and "beside the measured" in out
    assert "verdict: fits, " in out and "headroom; the run takes about" in out
    assert "wrote probes/big-" in out   # relative to the workspace the user is in
    assert not list((ws / "runs").iterdir())   # no run folder


def test_probe_json_has_the_settings_measurements_and_hardware(fitted):
    _, data = fitted
    assert data["fits"] is True and data["device"] == "CPU" and data["limit_from"] == "free RAM"
    assert data["settings"]["warmup"] == 1 and data["settings"]["steps"] == 2
    assert data["settings"]["config"]["data"]["max_length"] == 1024
    assert data["hardware"]["cores"] >= 1 and data["hardware"]["ram_gib"] > 0
    [rung] = data["rungs"]
    m = rung["measured"]
    assert m["status"] == "stopped" and m["total_steps"] == 10
    assert len(m["longest_batch"]) == min(8, m["rows"]) and max(m["longest_batch"]) == 1024   # packed rows
    assert m["peak_rss"] == rung["peak"] > 100 * 2 ** 20
    for key in ("sec_per_step", "tokens_per_s", "save_s", "eval_s", "sample_s", "start_s"):
        assert m[key] > 0, key
    assert rung["eta_s"] > 10 * m["sec_per_step"]
    assert data["estimate"]["bytes"] > 0 and abs(data["estimate"]["error"]) < 0.5


def test_the_ladder_finds_a_change_that_fits_and_writes_it(fitted, ws):
    peak = fitted[1]["rungs"][0]["peak"]
    # Below the config as it is, by more than a probe's own spread: the same probe measured 1.00, 1.07 and
    # 1.12 GiB alone in a row, and 1.03 then 0.92 GiB in the suite, so 100 MB below one reading let the
    # next fit as it was. Halving the batch frees more than 15% (0.92 -> 0.76 GiB).
    cap = int(peak * 0.85)
    proc = tuitune(ws, f"train configs/big.yaml --probe --warmup 1 --steps 1 --max-memory {cap}B "
                       "--write configs/big-fits.yaml")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    out = proc.stdout
    assert "(--max-memory): does not fit" in out
    assert "ladder (each rung adds to the ones before):" in out
    assert "  1. gradient checkpointing on: " in out
    assert "a paged 8-bit optimizer: skipped: needs a GPU" not in out or out.index("paged") > out.index("fits")
    assert "first that fits, as a change to the config:" in out
    assert "verdict: does not fit as it is; with the change above it does" in out
    data = probe_json(ws)
    assert data["fits"] is False and data["rungs"][0]["fits"] is False
    chosen = data["chosen"]
    assert chosen and data["rungs"][-1]["fits"] is True and data["rungs"][-1]["changes"] == chosen
    for field, value in chosen.items():
        assert f"  {field}: " in out and f"-> {json.dumps(value)}" in out
    from tuitune.config import load_config

    written = load_config(ws / "configs" / "big-fits.yaml")
    flat = written.model_dump()
    for field, value in chosen.items():
        section, key = field.split(".")
        assert flat[section][key] == value
    assert written.effective_batch_size == load_config(ws / "configs" / "big.yaml").effective_batch_size
    check = tuitune(ws, "config check configs/big-fits.yaml")
    assert check.returncode == 0, check.stdout + check.stderr
    again = tuitune(ws, f"train configs/big.yaml --probe --max-memory {cap}B --write configs/big-fits.yaml")
    assert_one_line_error(again, "configs/big-fits.yaml", "--force")   # never over a file without --force
    shutil.rmtree(ws / "probes")
    (ws / "configs" / "big-fits.yaml").unlink()


def test_bad_input_is_one_line_and_writes_nothing(ws):
    (ws / "configs" / "broken.yaml").write_text((ws / "configs" / "big.yaml").read_text().replace(
        "data/self_cognition.jsonl", "data/missing.jsonl"))
    assert_one_line_error(tuitune(ws, "train configs/broken.yaml --probe"), "configs/broken.yaml", "data.train",
                          "missing.jsonl")
    assert_one_line_error(tuitune(ws, "train configs/big.yaml --probe --max-memory lots"), "--max-memory 'lots'")
    assert_one_line_error(tuitune(ws, "train configs/big.yaml --write x.yaml"), "--write is for --probe")
    from tuitune.train.runfolder import process_start_time

    live = ws / "runs" / "other"
    live.mkdir()
    (live / "state.json").write_text(json.dumps({"status": "running", "pid": os.getpid(), "host": socket.gethostname(),
                                                 "pid_start": process_start_time(os.getpid())}))
    try:
        assert_one_line_error(tuitune(ws, "train configs/big.yaml --probe"), "run other is running", "--force")
    finally:
        shutil.rmtree(live)
    assert not (ws / "probes").exists()
    assert not (ws / "x.yaml").exists()


def test_a_probe_child_s_peak_is_its_own_not_the_big_process_that_started_it():
    """CI's failure: a pytest worker of 2.9 GiB started the probe, ru_maxrss carried its size over fork +
    exec, and every rung read 2.87 GiB (no rung fit). The child's peak is its own."""
    import subprocess
    import sys

    from tuitune.train.ladder import peak_rss

    ballast = bytearray(768 * 2**20)
    ballast[::4096] = b"\1" * len(range(0, len(ballast), 4096))   # resident, not only reserved
    assert peak_rss() > 768 * 2**20
    child = subprocess.run([sys.executable, "-c", "from tuitune.train.ladder import peak_rss; print(peak_rss())"],
                           capture_output=True, text=True, check=True)
    assert float(child.stdout) < 256 * 2**20, child.stdout
    del ballast


def test_out_of_memory_mid_run_ends_with_the_next_rung_and_resumes_with_it(tiny_model, tmp_path):
    ws = make_workspace(tmp_path / "ws", tiny_model)
    write_config(ws, "oom", **{"training.max_steps": 4, "training.save_steps": 2, "training.logging_steps": 1,
                               "evaluation.prompts": []})
    proc = tuitune(ws, "train configs/oom.yaml --name oom --foreground", env={"TUITUNE_TEST_OOM_AT_STEP": "3"})
    assert proc.returncode != 0
    run = ws / "runs" / "oom"
    st = state(run)
    assert st["status"] == "failed"
    line = st["error"]
    assert line.startswith("out of memory at step 3 (peak RSS "), line
    assert "next: gradient checkpointing on (training.gradient_checkpointing: true)" in line
    assert "`tuitune runs resume oom` continues from checkpoint-2 (it is intact)" in line
    assert "OutOfMemoryError:" not in line
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert errors == [f"error: run oom failed: {line}"]   # one line, not the exception's
    assert (run / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    frozen = run / "config.yaml"
    frozen.write_text(frozen.read_text().replace("gradient_checkpointing: false", "gradient_checkpointing: true"))
    resumed = tuitune(ws, "runs resume oom --foreground")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-3000:]
    st = state(run)
    assert st["status"] == "finished" and st["step"] == 4
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.xdist_group("real")
def test_real_model_probe_fits_and_the_estimate_is_within_15_percent(real_model, tmp_path):
    from tuitune.config import get_preset, save_config
    from tuitune.workspace import Workspace

    w = Workspace.at(tmp_path / "smol").ensure()
    shutil.copy(ROOT / "sample_data" / "real" / "self_cognition_en.jsonl", w.data / "self_cognition_en.jsonl")
    save_config(get_preset("smol-demo").model_copy(update={"model": str(real_model)}), w.configs / "smol.yaml")
    proc = tuitune(w.root, "train configs/smol.yaml --probe --warmup 1 --steps 2")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    data = probe_json(w.root)
    assert data["fits"] and data["rungs"][0]["measured"]["total_steps"] == 40
    assert abs(data["estimate"]["error"]) < 0.15, data["estimate"]
