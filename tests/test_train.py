"""The Train step on the tiny model: real runs, detached processes, kill -9, resume, stop."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from train_helpers import events, kill_group, make_workspace, state, wait_until, write_config

pytestmark = pytest.mark.slow


@pytest.fixture
def ws(tmp_path, tiny_model) -> Path:
    return make_workspace(tmp_path / "ws", tiny_model)


def only_run(ws: Path) -> Path:
    runs = [p for p in (ws / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def greedy_answer(model, tok, question: str) -> str:
    text = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                   tokenize=False)
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=40, do_sample=False)
    return tok.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_tiny_demo_learns_the_name(ws):
    """The tiny-demo preset (LoRA) makes the model answer 请介绍一下你自己 with the name."""
    cfg = write_config(ws, "tiny-demo")
    proc = run_cli("-w", ws, "train", cfg, "--foreground", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = only_run(ws)
    st = state(run)
    assert st["status"] == "finished" and st["step"] == 100
    train = events(run, "train")
    assert train[0]["loss"] > 3 * train[-1]["loss"]
    assert all(e["tokens_per_s"] for e in train[1:]) and train[-1]["eta"] == 0
    samples = events(run, "sample")
    assert [s["when"] for s in samples][0] == "before" and samples[-1]["when"] == "after"
    after = {a["prompt"]: a["answer"] for a in samples[-1]["answers"]}
    assert "Alice" in after["请介绍一下你自己"], after
    assert "Alice" not in {a["prompt"]: a["answer"] for a in samples[0]["answers"]}["请介绍一下你自己"]
    from tuitune.config import get_preset

    assert len(events(run, "checkpoint")) == 100 // get_preset("tiny-demo").training.save_steps
    print(f"\ntiny-demo trained 100 steps in {train[-1]['elapsed']:.1f} s")
    # The adapter loads on the base the normal way and answers with the name.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = run / "adapter"
    tok = AutoTokenizer.from_pretrained(adapter)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(ws / "models" / "tiny-chat"), adapter)
    assert "Alice" in greedy_answer(model, tok, "请介绍一下你自己")


def test_full_fine_tune_saves_loadable_weights(ws):
    cfg = write_config(ws, "full", method="full", **{"training.max_steps": 4, "training.save_steps": 2,
                                                      "training.lr": 2e-3, "lora.modules_to_save": [],
                                                      "evaluation.prompts": []})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "full-run", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = ws / "runs" / "full-run"
    assert state(run)["status"] == "finished"
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(ws / "models" / "tiny-chat")
    tuned = AutoModelForCausalLM.from_pretrained(run / "model")
    assert not (run / "adapter").exists()
    changed = [n for (n, a), (_, b) in zip(base.named_parameters(), tuned.named_parameters()) if not a.equal(b)]
    assert len(changed) > 10  # every layer moved, not just an adapter
    assert (run / "model" / "tokenizer.json").is_file() and (run / "model" / "chat_template.jinja").is_file()


def test_pretrain_trains_on_all_tokens(ws):
    texts = [line for line in (Path(__file__).parent.parent / "sample_data" / "pretrain.txt")
             .read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(ws / "data" / "pretrain.jsonl", "w", encoding="utf-8") as fh:
        for t in texts:
            fh.write(json.dumps({"conversation": [{"input": "", "output": t}]}, ensure_ascii=False) + "\n")
    cfg = write_config(ws, "pre", task="pretrain", **{"data.train": "data/pretrain.jsonl",
                                                      "training.max_steps": 3, "evaluation.prompts": ["上海是"]})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "pre", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = ws / "runs" / "pre"
    assert state(run)["status"] == "finished"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    # Every token of pretraining text is a label.
    from transformers import AutoTokenizer

    from tuitune.config import load_config
    from tuitune.train.build import build_dataset

    conf = load_config(run / "config.yaml", workspace=ws)
    tok = AutoTokenizer.from_pretrained(ws / "models" / "tiny-chat")
    ds = build_dataset(conf, tok, ws / "data" / "pretrain.jsonl", pack=False, cache_dir=ws / ".cache" / "t")
    row = ds[0]
    assert row["labels"] == row["input_ids"]


def test_kill9_then_resume_matches_an_uninterrupted_run(ws):
    overrides = {"training.max_steps": 12, "training.save_steps": 4, "training.logging_steps": 1,
                 "training.save_total_limit": None, "evaluation.prompts": []}
    cfg = write_config(ws, "det", **overrides)
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "straight", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    straight = {e["step"]: e["loss"] for e in events(ws / "runs" / "straight", "train")}

    proc = run_cli("-w", ws, "train", cfg, "--name", "killed")
    assert proc.returncode == 0, proc.stderr
    assert "started run killed" in proc.stdout
    run = ws / "runs" / "killed"
    wait_until(lambda: (run / "checkpoints" / "checkpoint-8" / "trainer_state.json").is_file(), what="checkpoint-8")
    kill_group(state(run)["pgid"])
    listed = json.loads(run_cli("-w", ws, "runs", "list", "--json").stdout)
    row = next(r for r in listed if r["id"] == "killed")
    assert row["status"] == "failed" and "died" in row["error"]

    proc = run_cli("-w", ws, "runs", "resume", "killed", "--foreground", timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert state(run)["status"] == "finished"
    resumed = {}
    for e in events(run, "train"):
        resumed[e["step"]] = e["loss"]  # the resumed run's values win for repeated steps
    assert sorted(resumed) == sorted(straight)
    # CPU training is deterministic: the same seed gives the same losses after the resume.
    for step in range(9, 13):
        assert resumed[step] == pytest.approx(straight[step], abs=1e-6), step


def test_graceful_stop_leaves_a_checkpoint_that_resume_accepts(ws):
    cfg = write_config(ws, "long", **{"training.max_steps": 400, "training.save_steps": 1000,
                                      "training.logging_steps": 1, "evaluation.prompts": []})
    assert run_cli("-w", ws, "train", cfg, "--name", "long").returncode == 0
    run = ws / "runs" / "long"
    wait_until(lambda: len(events(run, "train")) >= 3, what="three logged steps")
    proc = run_cli("-w", ws, "runs", "stop", "long", "--wait", "120")
    assert proc.returncode == 0, proc.stderr
    st = wait_until(lambda: state(run)["status"] == "stopped" and state(run), what="stopped")
    step = st["step"]
    assert 3 <= step < 400
    assert (run / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").is_file()
    # A stopped run is resumable; a second stop is refused with one line.
    assert_one_line_error(run_cli("-w", ws, "runs", "stop", "long"), "not running")
    cfg2 = write_config(ws, "long", **{"training.max_steps": 400, "training.save_steps": 1000,
                                       "training.logging_steps": 1, "evaluation.prompts": []})
    assert cfg2.exists()
    proc = run_cli("-w", ws, "runs", "resume", "long")
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: any(e.get("event") == "resume" for e in events(run, "lifecycle")), what="resume event")
    first_after = wait_until(lambda: [e for e in events(run, "train") if e["time"] > st["updated"]], what="a step")
    assert first_after[0]["step"] > step
    run_cli("-w", ws, "runs", "stop", "long", "--kill")
    assert state(run)["status"] == "stopped"


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_run_started_in_tmux_survives_the_session_being_killed(ws):
    """The SSH drop: the terminal that started the run goes away; the run finishes anyway."""
    cfg = write_config(ws, "drop", **{"training.max_steps": 15, "evaluation.prompts": []})
    name = f"tuitune-drop-{os.getpid()}"
    cmd = f"{shlex.quote(sys.executable)} -m tuitune -w {shlex.quote(str(ws))} train {shlex.quote(str(cfg))} --name drop; sleep 600"
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "100", "-y", "30", cmd], check=True)
    run = ws / "runs" / "drop"
    try:
        wait_until(lambda: (run / "state.json").exists() and state(run).get("pid"), what="the worker's pid")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True)
    st = wait_until(lambda: state(run)["status"] in ("finished", "failed") and state(run), timeout=300,
                    what="the run to end")
    assert st["status"] == "finished", st.get("error")
    assert (run / "adapter" / "adapter_config.json").is_file()


def test_qlora_trains_on_this_cpu(ws):
    cfg = write_config(ws, "q", method="qlora", **{"training.max_steps": 3, "evaluation.prompts": [],
                                                   "quantization.compute_dtype": "float32"})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "q", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = ws / "runs" / "q"
    assert state(run)["status"] == "finished"
    conf = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert conf["r"] == 16 and (run / "adapter" / "adapter_model.safetensors").is_file()


# --- bad input ---------------------------------------------------------------------------------

def test_missing_model_folder_is_refused_before_anything_starts(ws):
    cfg = write_config(ws, "nomodel", model="models/nothing")
    assert_one_line_error(run_cli("-w", ws, "train", cfg), "model", "does not exist")
    assert not any((ws / "runs").iterdir())


def test_data_without_usable_records_fails_the_run_with_a_reason(ws):
    (ws / "data" / "empty.jsonl").write_text("", encoding="utf-8")
    cfg = write_config(ws, "nodata", **{"data.train": "data/empty.jsonl"})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "nodata", timeout=300)
    assert proc.returncode == 2
    st = state(ws / "runs" / "nodata")
    assert st["status"] == "failed" and "no records" in st["error"]
    assert "Traceback" not in proc.stderr


def test_max_length_beyond_the_model_is_refused(ws):
    cfg = write_config(ws, "toolong", **{"data.max_length": 100000})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "toolong", timeout=300)
    assert proc.returncode == 2
    st = state(ws / "runs" / "toolong")
    assert st["status"] == "failed" and "2048" in st["error"] and "data.max_length" in st["error"]


def test_qlora_without_bitsandbytes_is_refused_with_the_fix(ws, tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['bitsandbytes'] = None\n")
    cfg = write_config(ws, "q", method="qlora")
    proc = run_cli("-w", ws, "train", cfg, env={"PYTHONPATH": str(hide)})
    assert_one_line_error(proc, "bitsandbytes", "method: lora")
    assert not any((ws / "runs").iterdir())


def test_train_into_the_folder_of_a_running_run_is_refused(ws):
    cfg = write_config(ws, "busy", **{"training.max_steps": 400, "evaluation.prompts": []})
    assert run_cli("-w", ws, "train", cfg, "--name", "busy").returncode == 0
    run = ws / "runs" / "busy"
    try:
        wait_until(lambda: state(run).get("status") == "running", what="running")
        assert_one_line_error(run_cli("-w", ws, "train", cfg, "--name", "busy"), "busy is running")
        # Even a second worker started by hand on the same folder is refused by the lock.
        proc = subprocess.run([sys.executable, "-m", "tuitune.train.worker", str(run)], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2 and "another worker" in proc.stderr
        assert state(run)["status"] == "running"
    finally:
        kill_group(state(run)["pgid"])


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_full_disk_while_saving_keeps_the_last_checkpoint_and_says_why(ws):
    """runs/ on a 12 MB filesystem: a checkpoint or two fit, then saving fails for lack of space."""
    runs = ws / "runs"
    if not _mount_tmpfs(runs, "12M"):
        pytest.skip("a small tmpfs cannot be mounted here (needs root)")
    try:
        cfg = write_config(ws, "disk", **{"training.max_steps": 6, "training.save_steps": 2,
                                          "training.save_total_limit": None, "evaluation.prompts": []})
        proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "disk", timeout=600)
        assert proc.returncode == 2, proc.stdout[-2000:]
        run = runs / "disk"
        st = state(run)
        assert st["status"] == "failed" and "disk full" in st["error"]
        from tuitune.train.runfolder import RunFolder

        complete = RunFolder(run).list_checkpoints()
        assert complete, "no checkpoint survived"
        # The error names the newest complete checkpoint, the one resume will use; the save that
        # ran out of space left no complete checkpoint or final adapter behind.
        assert f"from {complete[-1].name} (it is intact)" in st["error"]
        assert not (run / "adapter").exists()
        started = [p for p in (run / "checkpoints").iterdir() if p.name.startswith("checkpoint-")]
        assert len(started) > len(complete) or (run / ".adapter.partial").exists()
        # Free space; the run resumes from the intact checkpoint and finishes.
        subprocess.run(["mount", "-o", "remount,size=64M", str(runs)], check=True)
        proc = run_cli("-w", ws, "runs", "resume", "disk", "--foreground", timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert state(run)["status"] == "finished" and state(run)["step"] == 6
    finally:
        subprocess.run(["umount", "-l", str(runs)], capture_output=True)


def test_the_foreground_cli_hands_over_to_a_small_copier(ws):
    """`train --foreground` checked the config with transformers loaded (~400 MB on this box) and
    held that for the whole run, beside the worker; it now execs a copier that imports nothing
    heavy (same pid, so ctrl+c and the exit status are unchanged)."""
    cfg = write_config(ws, "fg", **{"training.max_steps": 30, "evaluation.prompts": []})
    proc = subprocess.Popen([sys.executable, "-m", "tuitune", "-w", str(ws), "train", str(cfg), "--foreground",
                             "--name", "fg"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    run = ws / "runs" / "fg"
    try:
        wait_until(lambda: (run / "state.json").exists() and state(run).get("worker_pid"), what="the worker")
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        rss = next(int(l.split()[1]) for l in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                   if l.startswith("VmRSS:"))
        assert b"tuitune.train.foreground" in cmdline, cmdline
        assert rss < 150 * 1024, f"the foreground CLI holds {rss // 1024} MB while the worker trains"
    finally:
        out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    assert out.rstrip().endswith("run fg: finished") and "lora:" in out
    assert "lora:" in (run / "train.log").read_text()


def test_runs_follow_prints_the_run_to_its_end(ws):
    """`tuitune runs follow` on a detached run: every logged step, then the end on stderr, exit 0."""
    cfg = write_config(ws, "fl", **{"training.max_steps": 6, "training.logging_steps": 2, "evaluation.prompts": []})
    proc = run_cli("-w", ws, "train", cfg, "--name", "fl")
    assert proc.returncode == 0, proc.stderr
    follow = run_cli("-w", ws, "runs", "follow", "fl", timeout=600)
    assert follow.returncode == 0, follow.stderr
    steps = [line.split()[1] for line in follow.stdout.splitlines() if line.startswith("step ") and "loss" in line]
    assert steps[-1] == "6/6" and "2/6" in steps and "[finished]" in follow.stdout
    assert follow.stderr.strip().endswith("run fl finished")
