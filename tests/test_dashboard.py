"""The headless dashboard: RunView (bounded series, latest values), RunFollower (byte offsets, chunks)."""

from __future__ import annotations

import json
import math
import shutil
import sys
import types
from pathlib import Path

import pytest

from tuitune.train.runview import GpuProbe, RunFollower, RunView, Series, format_gpus, parse_lines
from tuitune.train.formatting import format_duration, format_rate
from tuitune.train.runfolder import RunFolder
from tuitune.train.watch import run_rows

DATA = Path(__file__).parent / "data" / "train_run"


def recorded() -> list[dict]:
    """The events of a real tiny-demo run (100 steps, LoRA), recorded from `tuitune train`."""
    return [json.loads(l) for l in (DATA / "events.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]


def synthetic_lines(n: int, total: int | None = None):
    """``n`` train events shaped like the worker's (json.dumps, same keys), with evals and samples."""
    total = total or n
    t0 = 1_790_000_000.0
    yield json.dumps({"time": t0, "type": "lifecycle", "event": "train_begin", "step": 0, "total_steps": total,
                      "resumed": False})
    for step in range(1, n + 1):
        loss = 0.4 + 2.5 * math.exp(-step / (n / 8)) + 0.05 * math.sin(step)
        if step == 61_803:
            loss = 0.01  # one outlier: the lowest value of the run
        yield json.dumps({"time": t0 + step, "type": "train", "step": step, "total_steps": total,
                          "epoch": step / 1000, "loss": loss, "lr": 2e-4 * (1 - step / total), "grad_norm": 0.5,
                          "tokens": step * 4096, "tokens_per_s": 5120.0, "elapsed": float(step),
                          "eta": float(total - step)})
        if step % 500 == 0:
            yield json.dumps({"time": t0 + step, "type": "eval", "step": step, "eval_loss": loss + 0.1})
        if step % 1000 == 0:
            yield json.dumps({"time": t0 + step, "type": "sample", "step": step, "when": "during",
                              "answers": [{"prompt": "你是谁", "answer": f"我是Alice ({step})"}]},
                             ensure_ascii=False)


def write_run(folder: Path, lines) -> RunFolder:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "events.jsonl", "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")
    return RunFolder(folder)


def follow_all(run: RunFolder, view: RunView, chunk: int = 1 << 20, fast: bool = True) -> int:
    follower = RunFollower(run, chunk_bytes=chunk)
    reads = 0
    while True:
        reads += 1
        if fast:
            view.feed_bytes(follower.read_bytes())
        else:
            view.feed(follower.read())
        if follower.at_end:
            return reads


# --- RunView on a recorded run ------------------------------------------------------------------------

def test_recorded_run_gives_the_dashboard_numbers():
    events = recorded()
    view = RunView("tiny-demo")
    view.feed(events)
    train = [e for e in events if e["type"] == "train"]
    assert view.loss.points() == [(e["step"], e["loss"]) for e in train]
    assert view.eval.points() == []
    snap = view.snapshot()
    assert (snap.step, snap.total_steps, snap.loss) == (100, 100, train[-1]["loss"])
    assert snap.lr == train[-1]["lr"] and snap.tokens_per_s == train[-1]["tokens_per_s"] and snap.eta == 0.0
    assert snap.best_loss == min(((e["step"], e["loss"]) for e in train), key=lambda p: p[1])
    # The newest answer to each prompt, with when it was given.
    assert {s.prompt: (s.step, s.when) for s in snap.samples} == {"请介绍一下你自己": (100, "after"),
                                                                   "你是谁": (100, "after")}
    assert "Alice" in snap.samples[0].answer
    assert [c[0] for c in snap.checkpoints] == [25, 50, 75, 100]
    assert [e["event"] for e in snap.lifecycle] == ["created", "worker_start", "train_begin", "finished"]
    assert snap.events == len(events)


def test_an_ended_run_shows_its_whole_run_rate_and_a_live_one_its_recent_rate():
    """#20 item 9: the recorded run's last window ran at 379.7 tokens/s, the run at 57,120 tokens in 217 s."""
    view = RunView("tiny-demo")
    view.feed(recorded())
    view.set_state({"status": "finished"})
    snap = view.snapshot()
    assert snap.tokens_per_s == 379.7  # the last logging window's
    assert snap.rate == (pytest.approx(57120 / 217.01), False)
    assert format_rate(*snap.rate) == "263"
    view.set_state({"status": "running"})
    assert view.snapshot().rate == (379.7, True) and format_rate(*view.snapshot().rate) == "380 (recent)"
    assert format_rate(None) == "-" and format_rate(12345.6) == "12,346"


def test_the_whole_run_rate_counts_every_session_but_not_the_stop():
    """A run stopped for an hour and resumed: its windows all ran at 100 tokens/s (the last at 10),
    and the elapsed count (training seconds over both sessions) leaves the hour out."""
    t0 = 1_790_000_000.0
    lines = [{"time": t0, "type": "lifecycle", "event": "train_begin", "step": 0, "total_steps": 4}]
    for step, elapsed, tps in ((1, 10.0, 100.0), (2, 20.0, 100.0)):
        lines.append({"time": t0 + elapsed, "type": "train", "step": step, "total_steps": 4, "loss": 1.0,
                      "tokens": 1000 * step, "tokens_per_s": tps, "elapsed": elapsed})
    lines.append({"time": t0 + 3620, "type": "lifecycle", "event": "train_begin", "step": 2, "total_steps": 4,
                  "resumed": True})
    for step, elapsed, tps in ((3, 30.0, 100.0), (4, 130.0, 10.0)):
        lines.append({"time": t0 + 3600 + elapsed, "type": "train", "step": step, "total_steps": 4, "loss": 1.0,
                      "tokens": 1000 * step, "tokens_per_s": tps, "elapsed": elapsed})
    view = RunView("r")
    view.feed(lines)
    view.set_state({"status": "finished"})
    snap = view.snapshot()
    assert snap.average_tokens_per_s == pytest.approx(4000 / 130.0) and snap.rate[1] is False
    assert format_rate(*snap.rate) == "31"


def test_feed_bytes_matches_feed_line_by_line():
    data = (DATA / "events.jsonl").read_bytes()
    a, b = RunView("r"), RunView("r")
    a.feed(parse_lines(data))
    b.feed_bytes(data)
    assert a.snapshot() == b.snapshot()


def test_feed_bytes_falls_back_when_train_lines_look_different():
    """Keys in another order, a null loss: the fast scan does not match, every line is still counted."""
    lines = [json.dumps({"type": "train", "loss": 2.0 - s / 10, "step": s, "time": s}) for s in range(1, 6)]
    lines.insert(2, json.dumps({"time": 2.5, "type": "train", "step": 3, "loss": None}))
    view = RunView("r")
    view.feed_bytes(("\n".join(lines) + "\n").encode())
    assert view.loss.points() == [(s, 2.0 - s / 10) for s in range(1, 6)]
    assert view.events == 6


def test_a_resumed_run_does_not_count_down_an_old_eta():
    view = RunView("r")
    view.feed([{"time": 100.0, "type": "train", "step": 10, "total_steps": 50, "loss": 1.0, "eta": 80.0,
                "elapsed": 20.0}])
    view.set_state({"status": "running"})
    assert view.snapshot().eta_at(130.0) == 50.0  # counts down from the event's time
    assert view.snapshot().elapsed_at(130.0) == 50.0
    view.feed([{"time": 500.0, "type": "lifecycle", "event": "train_begin", "step": 10, "total_steps": 50}])
    assert view.snapshot().eta_at(530.0) is None
    view.set_state({"status": "stopped"})
    assert view.snapshot().eta_at(530.0) is None  # an ended run has no time left


# --- a long run stays small ---------------------------------------------------------------------------

def test_100k_events_keep_a_bounded_series_with_the_last_point_and_the_minimum(tmp_path):
    lines = list(synthetic_lines(100_000))
    run = write_run(tmp_path / "big", lines)
    view = RunView("big")
    reads = follow_all(run, view)
    assert reads > 5  # 25 MB in 1 MB chunks: the first paint does not wait for the whole file
    train = [json.loads(l) for l in lines if '"type": "train"' in l]
    pts = view.loss.points()
    assert len(pts) <= 2000 and len(pts) > 500
    assert pts[-1] == (100_000, train[-1]["loss"])  # the newest point exact
    assert view.loss.min == (61_803, 0.01)  # the lowest loss and its step kept exactly
    xs = [x for x, _ in pts]
    assert xs == sorted(xs) and xs[0] == 1
    lo, hi = min(e["loss"] for e in train), max(e["loss"] for e in train)
    assert all(lo <= y <= hi for _, y in pts)
    # Merged buckets are means: early in the run the curve is still near the true values.
    assert abs(pts[1][1] - train[int(pts[1][0]) - 1]["loss"]) < 0.2
    snap = view.snapshot()
    assert snap.step == 100_000 and snap.eta == 0.0 and len(snap.eval_points) == 200
    assert snap.samples[0].answer == "我是Alice (100000)" and snap.events == len(lines)
    # The fast path and the line-by-line path agree on everything.
    slow = RunView("big")
    follow_all(run, slow, fast=False)
    assert slow.snapshot() == snap


def test_series_keeps_every_point_until_the_bound():
    s = Series(max_points=100)
    for i in range(98):
        s.add(i, float(i))
    assert s.points() == [(i, float(i)) for i in range(98)]
    for i in range(98, 1000):
        s.add(i, float(i))
    pts = s.points()
    assert len(pts) <= 100 and pts[-1] == (999, 999.0) and s.min == (0, 0.0) and s.count == 1000
    # Each merged point is the mean of the points it covers, placed at the first of them.
    assert pts[0][1] == pytest.approx(sum(range(s.width)) / s.width)


def test_series_extend_equals_adding_one_by_one():
    import random

    rng = random.Random(7)
    for _ in range(60):
        n, bound = rng.randint(0, 3000), rng.choice([4, 5, 9, 64, 2000])
        pts = [(i, rng.random()) for i in range(n)]
        one, bulk = Series(bound), Series(bound)
        for p in pts:
            one.add(*p)
        i = 0
        while i < n:  # in pieces of any size, sometimes a single add
            k = rng.randint(1, 500)
            if rng.random() < 0.2:
                bulk.add(*pts[i])
                k = 1
            else:
                bulk.extend(pts[i:i + k])
            i += k
        assert (bulk.count, bulk.min, bulk.last, bulk.width) == (one.count, one.min, one.last, one.width)
        assert bulk.points() == one.points()


# --- following the file -------------------------------------------------------------------------------

def test_follower_leaves_a_partial_last_line_for_the_next_read(tmp_path):
    run = write_run(tmp_path / "r", [json.dumps({"type": "train", "step": 1, "loss": 2.0})])
    with open(run.events_path, "a") as fh:
        fh.write('{"type": "train", "step": 2, "lo')
    f = RunFollower(run)
    assert [e["step"] for e in f.read()] == [1]
    assert f.at_end and f.offset == len(json.dumps({"type": "train", "step": 1, "loss": 2.0})) + 1
    assert f.read() == []
    with open(run.events_path, "a") as fh:
        fh.write('ss": 1.5}\n')
    assert f.read() == [{"type": "train", "step": 2, "loss": 1.5}] and f.at_end


def test_follower_reads_bounded_chunks_and_whole_long_lines(tmp_path):
    lines = [json.dumps({"type": "train", "step": i, "loss": 1.0 / i, "pad": "x" * 150}) for i in range(1, 101)]
    lines.insert(50, json.dumps({"type": "sample", "step": 50, "answers": [{"prompt": "p", "answer": "y" * 5000}]}))
    run = write_run(tmp_path / "r", lines)
    f = RunFollower(run, chunk_bytes=1000)
    seen, sizes = [], []
    while True:
        before = f.offset
        got = f.read()
        sizes.append(f.offset - before)
        seen += got
        if f.at_end:
            break
    assert len(seen) == 101 and [e["step"] for e in seen if e["type"] == "train"] == list(range(1, 101))
    assert max(sizes) > 5000  # the long line came whole
    assert sorted(sizes)[-2] <= 1000  # every other read stayed within the chunk
    assert len(sizes) > 20


def test_follower_starts_over_when_the_file_is_replaced(tmp_path):
    run = write_run(tmp_path / "r", [json.dumps({"type": "train", "step": i, "loss": 1.0}) for i in range(1, 50)])
    f = RunFollower(run)
    assert len(f.read()) == 49 and not f.reset
    write_run(tmp_path / "r", [json.dumps({"type": "train", "step": 1, "loss": 3.0})])
    assert f.read() == [{"type": "train", "step": 1, "loss": 3.0}] and f.reset


def test_a_damaged_line_costs_only_that_line():
    data = (b'{"type": "eval", "step": 1, "eval_loss": 2.0}\n{"type": "ev\n'
            b'{"type": "eval", "step": 2, "eval_loss": 1.0}\n')
    view = RunView("r")
    view.feed_bytes(data)
    assert view.eval.points() == [(1, 2.0), (2, 1.0)]
    # Among train lines too (a crash mid-write leaves half a train line).
    train = [json.dumps({"time": s, "type": "train", "step": s, "loss": 1.0 / s}) for s in range(1, 5)]
    train.insert(2, '{"time": 9, "type": "train", "step": 9, "lo')
    view.feed_bytes(("\n".join(train) + "\n").encode())
    assert view.loss.points() == [(s, 1.0 / s) for s in range(1, 5)] and view.events == 6  # 2 evals + 4


def test_missing_events_file_is_empty(tmp_path):
    f = RunFollower(RunFolder(tmp_path / "nothing"))
    assert f.read() == [] and f.at_end and f.offset == 0


# --- the runs list, formatting, GPUs ------------------------------------------------------------------

def test_run_rows_read_state_and_call_a_dead_worker_failed(tmp_path):
    import psutil
    import subprocess

    ws = tmp_path / "ws"
    finished = ws / "runs" / "a-finished"
    finished.mkdir(parents=True)
    shutil.copy(DATA / "state.json", finished / "state.json")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    start = psutil.Process(dead.pid).create_time()
    dead.wait()
    crashed = RunFolder(ws / "runs" / "b-crashed")
    crashed.path.mkdir()
    crashed.write_state(status="running", created=1795453000.0, pid=dead.pid, pid_start=start, step=7,
                        total_steps=100, last_loss=1.5)
    rows = {r.id: r for r in run_rows(ws)}
    assert rows["a-finished"].status == "finished" and rows["a-finished"].step == 100
    assert rows["b-crashed"].status == "failed" and "died" in rows["b-crashed"].error
    assert (rows["b-crashed"].step, rows["b-crashed"].total_steps, rows["b-crashed"].last_loss) == (7, 100, 1.5)


def test_durations():
    assert [format_duration(s) for s in (None, 4.4, 65, 7260, 90000)] == ["-", "4s", "1m05s", "2h01m", "1d01h"]


def test_gpu_probe_without_nvml_or_driver_is_none(monkeypatch):
    broken = types.ModuleType("pynvml")

    def no_driver():
        raise RuntimeError("NVML Shared Library Not Found")

    broken.nvmlInit = no_driver
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    probe = GpuProbe()
    assert probe.read() is None and probe.read() is None
    assert format_gpus(None) == "no GPU"


def test_gpu_probe_reads_memory_and_utilisation(monkeypatch):
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: None
    fake.nvmlDeviceGetCount = lambda: 1
    fake.nvmlDeviceGetHandleByIndex = lambda i: i
    fake.nvmlDeviceGetName = lambda h: b"NVIDIA RTX 4090"
    fake.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=18 * 2**30, total=24 * 2**30)
    fake.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=97)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpus = GpuProbe().read()
    assert [(g.name, g.used_gib, g.total_gib, g.util) for g in gpus] == [("NVIDIA RTX 4090", 18.0, 24.0, 97)]
    assert format_gpus(gpus) == "GPU0 18.0/24 GiB 97%"


def test_dashboard_stays_headless():
    import subprocess

    code = ("import sys, tuitune.train.runview; "
            "print(','.join(m for m in ('textual', 'torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


# --- one source of truth for step and time (issue 12, item 11) ----------------------------------------------

def _train(step, t, elapsed, eta=None, loss=1.0, total=300):
    return {"time": t, "type": "train", "step": step, "total_steps": total, "loss": loss, "elapsed": elapsed,
            "eta": eta}


def test_a_checkpoint_or_a_stop_moves_the_step_shown():
    view = RunView("r")
    view.feed([{"type": "lifecycle", "event": "train_begin", "step": 0, "total_steps": 300},
               _train(55, 1000.0, 55.0), {"type": "checkpoint", "step": 58, "path": "x/checkpoint-58"}])
    snap = view.snapshot()
    assert snap.step == 58 and snap.checkpoints[-1] == (58, "x/checkpoint-58")
    view.feed([{"type": "lifecycle", "event": "stopped", "step": 58, "checkpoint": "x/checkpoint-58"}])
    assert view.snapshot().step == 58


def test_elapsed_continues_across_a_resume_whatever_the_worker_wrote():
    # An older worker restarted its count at the resume (elapsed 5 after 120): the view adds them up.
    view = RunView("r")
    view.feed([{"type": "lifecycle", "event": "train_begin", "step": 0, "total_steps": 300},
               _train(50, 1000.0, 120.0),
               {"type": "lifecycle", "event": "resume", "checkpoint": "x/checkpoint-50"},
               {"type": "lifecycle", "event": "train_begin", "step": 50, "total_steps": 300, "resumed": True},
               _train(55, 5000.0, 5.0)])
    assert view.snapshot().elapsed == pytest.approx(125.0)
    # The new worker writes the whole run's count: nothing is added twice.
    view = RunView("r")
    view.feed([_train(50, 1000.0, 120.0),
               {"type": "lifecycle", "event": "train_begin", "step": 50, "total_steps": 300, "resumed": True},
               _train(55, 5000.0, 125.0)])
    assert view.snapshot().elapsed == pytest.approx(125.0)


def test_resuming_from_an_earlier_checkpoint_shows_that_step():
    view = RunView("r")
    view.feed([_train(70, 1000.0, 70.0), {"type": "checkpoint", "step": 50, "path": "x/checkpoint-50"},
               {"type": "checkpoint", "step": 60, "path": "x/checkpoint-60"},
               {"type": "lifecycle", "event": "resume", "checkpoint": "/ws/runs/r/checkpoints/checkpoint-50"}])
    snap = view.snapshot()
    assert snap.step == 50 and snap.checkpoints[-1][0] == 50


def test_sample_answers_keep_every_round():
    view = RunView("r")
    view.feed(recorded())
    snap = view.snapshot()
    assert [(r.step, r.when) for r in snap.sample_rounds] == [
        (0, "before"), (25, "during"), (50, "during"), (75, "during"), (100, "after")]
    # The latest answer per prompt is still there for a one-glance view.
    assert {s.step for s in snap.samples} == {100}
    assert all(r.answers for r in snap.sample_rounds)


class _MemRun:
    """The part of RunFolder the callback uses, in memory."""

    def __init__(self, state=None):
        self.st = dict(state or {})
        self.events = []

    def read_state(self):
        return dict(self.st)

    def write_state(self, **changes):
        self.st.update(changes)
        return self.st

    def append_event(self, e):
        self.events.append(e)

    def take_request(self, what):
        return False


def _drive(cb, clock, monkeypatch, steps, start=0, dt=2.0, pause=0.0):
    """Run ``cb`` through a session from ``start``: ``steps`` logged steps of ``dt`` seconds each."""
    import tuitune.train.callbacks as C

    monkeypatch.setattr(C.time, "time", lambda: clock[0])
    args = types.SimpleNamespace(num_train_epochs=1, output_dir="/nowhere")
    st = types.SimpleNamespace(global_step=start, max_steps=300, epoch=0.0, num_input_tokens_seen=0)
    control = types.SimpleNamespace(should_save=False, should_training_stop=False)
    clock[0] += pause  # model load before train_begin: never a step
    cb.on_train_begin(args, st, control)
    etas = []
    for _ in range(steps):
        clock[0] += dt
        st.global_step += 1
        cb.on_log(args, st, control, logs={"loss": 1.0, "learning_rate": 1e-4})
        etas.append(cb.run.st["eta"])
    return etas


def test_callback_eta_is_smoothed_and_time_continues_across_a_resume(monkeypatch):
    from tuitune.train.callbacks import RunCallback

    cfg = types.SimpleNamespace(evaluation=types.SimpleNamespace(prompts=[], every=0))
    run = _MemRun()
    clock = [1000.0]
    cb = RunCallback(run, cfg, None, is_main=True)
    etas = _drive(cb, clock, monkeypatch, 10)
    assert run.st["elapsed"] == pytest.approx(20.0) and run.st["sec_per_step"] == pytest.approx(2.0)
    assert etas[-1] == pytest.approx(2.0 * 290)
    # Stopped, then resumed an hour later in a new process: the clock goes on from 20 s,
    # the ETA starts from the smoothed rate (no swing), and the gap never counts.
    clock[0] += 3600
    cb2 = RunCallback(run, cfg, None, is_main=True)
    etas2 = _drive(cb2, clock, monkeypatch, 3, start=10, pause=30.0)
    assert run.st["elapsed"] == pytest.approx(26.0)
    assert etas2[0] == pytest.approx(2.0 * 289)
    # A slower stretch moves the ETA gradually (an EMA), not by the whole jump at once.
    etas3 = _drive(RunCallback(run, cfg, None, is_main=True), clock, monkeypatch, 1, start=13, dt=20.0)
    assert 2.0 * 286 < etas3[0] < 20.0 * 286


def test_the_dashboard_and_the_environment_step_see_the_same_gpus(monkeypatch):
    """CUDA_VISIBLE_DEVICES=2,3 on a 4-GPU box: both list the two visible GPUs as GPU0 and GPU1
    (the dashboard listed all four, so its numbers were not the run's). NVML is faked here:
    this machine has no GPU."""
    from tuitune.doctor import gpu_inventory

    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: None
    fake.nvmlDeviceGetCount = lambda: 4
    fake.nvmlDeviceGetHandleByIndex = lambda i: i
    fake.nvmlDeviceGetName = lambda h: f"GPU-{h}".encode()
    fake.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=h * 2**30, total=80 * 2**30,
                                                                   free=(80 - h) * 2**30)
    fake.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=50)
    fake.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    dash = [(g.index, g.name) for g in GpuProbe().read()]
    env = [(g.index, g.name) for g in gpu_inventory(use_torch=False)]
    assert dash == env == [(0, "GPU-2"), (1, "GPU-3")]


def test_run_watcher_has_every_event_once_the_status_says_ended(tmp_path):
    """The one watcher of the Train screen and `runs follow`: state before events, so a caught-up
    poll whose status is ended has seen every event; snapshots at most once a second while a
    backlog streams in (the first at once), and whenever caught up."""
    from tuitune.train.watch import RunWatcher

    run = RunFolder(tmp_path / "r")
    run.path.mkdir()
    run.write_state(status="running")
    for i in range(1, 40):
        run.append_event({"type": "train", "step": i, "loss": 1.0 / i})
    now = [100.0]
    w = RunWatcher(run, log_lines=0, state_every=0, chunk_bytes=200, clock=lambda: now[0])
    seen, snaps, polls, ended = [], [], 0, False
    while True:
        p = w.poll()
        polls += 1
        seen += parse_lines(p.data)
        if p.snapshot is not None:
            snaps.append((p.caught_up, p.snapshot.step))
        if p.caught_up and not ended:
            run.append_event({"type": "train", "step": 40, "loss": 0.01})  # the worker's last event,
            run.write_state(status="finished")  # then its ended status
            ended = True
        elif p.caught_up and p.status == "finished":
            break
    assert [e["step"] for e in seen] == list(range(1, 41))
    assert polls > 5 and snaps[0][0] is False  # the backlog came in chunks, the first paint at once
    assert all(caught for caught, _ in snaps[1:])  # the clock stood still: no snapshot mid-backlog
    assert snaps[-1][1] == 40 and w.view.status == "finished"
