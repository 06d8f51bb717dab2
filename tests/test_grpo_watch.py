"""Watching a GRPO run (#24 item 3): `runs follow`, `runs compare`, the Train dashboard and the trackers show
its reward (mean and spread, each reward function's), completion length, KL and clipped share beside the
loss; its sampled completions with their rewards are sample rounds; the chart shows the reward on `e`.

One real tiny-model GRPO run (module fixture) for what a user sees from the CLI and the screen, and the
events of a recorded one (tests/data/grpo_run, paths as /ws) for RunView and the snapshots.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_cli, widget_text
from test_train_screen import make_app, make_run, shown, until
from train_helpers import events

from tuitune.train.runfolder import parse_lines
from tuitune.train.runview import RunView

DATA = Path(__file__).parent / "data" / "grpo_run"
GRPO_ID = "20261207-160335-grpo-demo"  # the recorded run
GRPO_NOW = 1796659430.0                # "now" for the recorded run: just after it finished
SFT_ID = "20261123-170741-tiny-demo"   # test_train_screen's recorded SFT run

PROMPTS = [{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(16)]
CONFIG = """\
model: models/tiny-chat
task: grpo
method: lora
data: {train: data/prompts.jsonl, max_length: 128, pack: false}
lora: {r: 8, alpha: 16, dropout: 0.0}
training: {max_steps: 6, batch_size: 4, grad_accum: 1, lr: 0.005, gradient_checkpointing: false,
           precision: fp32, save_steps: 6, save_total_limit: null, logging_steps: 1, report_to: [tensorboard]}
grpo:
  num_generations: 4
  max_completion_length: 8
  beta: 0.04
  rewards:
    - exact
    - "regex pattern='^ ?[0-9]' weight=0.5"
    - {name: length, target_length: 6, weight: 0.1}
evaluation: {prompts: [], eval_loss: false, every: 4}
"""


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A demo workspace with one finished GRPO run `g` (6 steps, completions sampled at steps 1, 4, 6,
    TensorBoard on) and the recorded SFT run beside it."""
    root = tmp_path_factory.mktemp("grpo-watch")
    proc = run_cli("demo", "ws", "--no-open", cwd=root)
    assert proc.returncode == 0, proc.stderr
    ws = root / "ws"
    (ws / "data" / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS), encoding="utf-8")
    (ws / "configs" / "grpo.yaml").write_text(CONFIG, encoding="utf-8")
    proc = subprocess.run(["tuitune", "train", "configs/grpo.yaml", "--foreground", "--name", "g"], cwd=ws,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    make_run(ws, SFT_ID)
    return ws


def last_train(ws: Path) -> dict:
    return events(ws / "runs" / "g", "train")[-1]


def spread(e: dict, key: str) -> str:
    return f"{e[key + '_mean']:.3f}±{e[key + '_std']:.3f}"


# --- the CLI --------------------------------------------------------------------------------------

def test_runs_follow_shows_the_rewards_and_the_scored_completions(ws):
    proc = run_cli("runs", "follow", "g", cwd=ws)
    assert proc.returncode == 0, proc.stderr
    out, e = proc.stdout, last_train(ws)
    step_line = next(line for line in out.splitlines() if line.startswith("step 6/6"))
    for text in (f"reward {spread(e, 'reward')}", f"exact {spread(e, 'reward_exact')}",
                 f"regex {spread(e, 'reward_regex')}", f"length {spread(e, 'reward_length')}",
                 "completion 8.0 tok", f"kl {e['kl']:.4f}", f"clipped {e['clip_ratio']:.1%}"):
        assert text in step_line, (text, step_line)
    rounds = events(ws / "runs" / "g", "sample")
    assert [r["step"] for r in rounds] == [1, 4, 6]  # the first step, every evaluation.every, the last
    assert out.count("sampled completions and their rewards:") == 3
    first = rounds[0]["answers"][0]
    assert len(rounds[0]["answers"]) == 4 and first["prompt"].startswith("What is ")  # one group, the record's text
    scores = first["rewards"]
    assert first["reward"] == pytest.approx(scores["exact"] + 0.5 * scores["regex"] + 0.1 * scores["length"], abs=1e-3)
    assert f"  Q: {first['prompt']}\n  A: {first['answer']}\n     reward {first['reward']:.3f} (exact " in out


def test_runs_compare_shows_the_reward_figures(ws):
    proc = run_cli("runs", "compare", SFT_ID, "g", cwd=ws)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in proc.stdout.splitlines() if line.count("│") == 4}
    e = last_train(ws)
    assert rows["reward"] == ["-", spread(e, "reward")]
    assert rows["reward exact"] == ["-", spread(e, "reward_exact")]
    assert rows["reward regex"][1] == spread(e, "reward_regex")
    assert rows["reward length"][1] == spread(e, "reward_length")
    assert rows["completion length"] == ["-", "8.0 tok"]
    assert rows["kl"] == ["-", f"{e['kl']:.4f}"] and rows["clipped"] == ["-", f"{e['clip_ratio']:.1%}"]
    best = max(events(ws / "runs" / "g", "train"), key=lambda t: t["reward_mean"])
    assert rows["reward (best)"] == ["-", f"{best['reward_mean']:.4f} @ {best['step']}"]
    figures = json.loads(run_cli("runs", "compare", SFT_ID, "g", "--json", cwd=ws).stdout)["figures"]
    assert figures["b"]["best_reward"] == pytest.approx(best["reward_mean"]) and figures["a"]["best_reward"] is None


def test_tensorboard_gets_the_reward_figures(ws):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(ws / "runs" / "g" / "tracking" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("train/loss", "train/reward", "train/reward_std", "train/rewards/exact/mean",
                "train/rewards/regex/std", "train/rewards/length/mean", "train/completions/mean_length",
                "train/kl", "train/clip_ratio/region_mean"):
        assert tag in tags, (tag, sorted(tags))
    rewards = [(s.step, s.value) for s in acc.Scalars("train/reward")]
    assert rewards == [(e["step"], pytest.approx(e["reward_mean"])) for e in events(ws / "runs" / "g", "train")]


# --- the Train screen -----------------------------------------------------------------------------

def offered_keys(app) -> set[str]:
    """The keys the screen offers now (the palette's; e is kept out of the footer at 80 columns)."""
    return {b.key for (_, b, enabled, _) in app.screen.active_bindings.values() if enabled}


async def test_the_dashboard_shows_the_rewards_and_charts_the_reward_on_e(ws):
    app = make_app(ws)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: shown(app, "g") and app.screen.snapshot.caught_up, "the GRPO run")
        snap, e = app.screen.snapshot, last_train(ws)
        stats = widget_text(app.screen.query_one("#train-stats"), 120)
        for text in (f"reward {spread(e, 'reward')}", f"exact {spread(e, 'reward_exact')}",
                     f"length {spread(e, 'reward_length')}", "completion 8.0 tok", f"kl {e['kl']:.4f}", "clipped"):
            assert text in stats, (text, stats)
        assert "e" in offered_keys(app)
        chart = app.screen.query_one("#train-chart")
        await until(pilot, lambda: chart.points[0] == snap.loss_points, "the loss chart")
        await pilot.press("e")
        await until(pilot, lambda: chart.points[0] == snap.reward_points and chart.up_to_date, "the reward chart")
        assert [y for _, y in snap.reward_points] == pytest.approx([t["reward_mean"] for t in events(ws / "runs" / "g", "train")])
        tabs = app.screen.query_one("#train-tabs")
        assert str(tabs.get_tab("tab-loss").label) == "Reward" and tabs.active == "tab-loss"
        await pilot.press("e")
        await until(pilot, lambda: chart.points[0] == snap.loss_points, "the loss chart again")
        assert str(tabs.get_tab("tab-loss").label) == "Loss"
        # Sampled completions: rounds with each completion's reward.
        await pilot.press("a")
        samples = widget_text(app.screen.query_one("#train-samples"), 120)
        first = events(ws / "runs" / "g", "sample")[-1]["answers"][0]
        assert "round 3 of 3: step 6, completions" in samples
        assert f"reward {first['reward']:.3f} (exact " in samples and first["prompt"] in samples
        # An SFT run has no reward: no e offered, and e leaves its loss chart alone.
        await pilot.press("e")  # asks for the reward chart, then the SFT run is selected
        app.screen.query_one("#train-runs").focus()
        keys = [k.value for k in app.screen.query_one("#train-runs").rows]
        await pilot.press(*["down"] * keys.index(SFT_ID))
        await until(pilot, lambda: shown(app, SFT_ID), "the SFT run")
        assert "e" not in offered_keys(app)
        await until(pilot, lambda: chart.points[0] == app.screen.snapshot.loss_points, "the SFT run's loss")
        assert str(tabs.get_tab("tab-loss").label) == "Loss"
        assert "reward" not in widget_text(app.screen.query_one("#train-stats"), 120)


# --- RunView on the recorded run --------------------------------------------------------------------

def recorded() -> bytes:
    return (DATA / "events.jsonl").read_bytes()


def test_runview_keeps_the_reward_figures_series_and_scored_rounds():
    view = RunView(GRPO_ID)
    view.feed_bytes(recorded())
    snap = view.snapshot()
    train = [e for e in parse_lines(recorded()) if e["type"] == "train"]
    assert snap.has_reward and snap.reward_points == tuple((e["step"], e["reward_mean"]) for e in train)
    assert snap.loss_points == tuple((e["step"], e["loss"]) for e in train)
    last = train[-1]
    for key in ("reward_mean", "reward_std", "reward_exact_mean", "reward_regex_std", "reward_length_mean",
                "completion_length", "kl", "clip_ratio"):
        assert snap.reward(key) == last[key], key
    assert [r.step for r in snap.sample_rounds] == [1, 4, 8, 12]
    assert {r.label() for r in snap.sample_rounds} == {f"step {s}, completions" for s in (1, 4, 8, 12)}
    one = snap.sample_rounds[0].answers[0]
    assert one.prompt == "What is 6 + 6?" and one.reward == 0.4667
    assert dict(one.rewards) == {"exact": 0.0, "regex": 1.0, "length": -0.3333}


def test_runview_reads_a_grpo_run_the_same_in_chunks():
    data = recorded()
    whole = RunView(GRPO_ID)
    whole.feed(parse_lines(data))
    chunked, pos = RunView(GRPO_ID), 0
    while pos < len(data):  # reads of about 2 KB of whole lines, as RunFollower hands them
        end = data.rfind(b"\n", pos, pos + 2048) + 1 or data.index(b"\n", pos) + 1
        chunked.feed_bytes(data[pos:end])
        pos = end
    assert chunked.snapshot() == whole.snapshot() and len(chunked.snapshot().reward_points) == 12


def test_an_sft_run_has_no_reward():
    from test_train_screen import recorded_lines

    view = RunView(SFT_ID)
    view.feed_bytes("\n".join(recorded_lines()).encode() + b"\n")
    snap = view.snapshot()
    assert not snap.has_reward and snap.reward_points == () and snap.rewards == ()
    assert all(s.reward is None and s.rewards == () for s in snap.samples)


# --- snapshots of the Train dashboard with the recorded GRPO run ---------------------------------------

def grpo_workspace(ws: Path):
    folder = make_run(ws, GRPO_ID, created=1796659399.37, log=(DATA / "train.log").read_text())
    for name in ("events.jsonl", "state.json"):
        shutil.copy(DATA / name, folder / name)
    return make_app(ws, now=GRPO_NOW)


def settled(*keys: str):
    async def run_before(pilot):
        app = pilot.app
        await until(pilot, lambda: shown(app, GRPO_ID), "the dashboard")
        await pilot.press(*keys)
        chart = app.screen.query_one("#train-chart")
        want = app.screen.snapshot.reward_points if "e" in keys else app.screen.snapshot.loss_points
        await until(pilot, lambda: chart.up_to_date and chart.points[0] == want, "the chart")
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()

    return run_before


def test_grpo_run_80x24(snap_compare, fixed_workspace):
    assert snap_compare(grpo_workspace(fixed_workspace), terminal_size=(80, 24), run_before=settled())


def test_grpo_reward_chart_80x24(snap_compare, fixed_workspace):
    assert snap_compare(grpo_workspace(fixed_workspace), terminal_size=(80, 24), run_before=settled("e"))


def test_grpo_reward_chart_120x36(snap_compare, fixed_workspace):
    assert snap_compare(grpo_workspace(fixed_workspace), terminal_size=(120, 36), run_before=settled("e"))


def test_grpo_completions_120x36(snap_compare, fixed_workspace):
    assert snap_compare(grpo_workspace(fixed_workspace), terminal_size=(120, 36), run_before=settled("a"))


def test_a_grpo_adapter_merges_as_any_adapter_and_the_merged_model_answers_as_the_run(ws):
    """#24 section 4: a GRPO run merges as any adapter (verified against peft; export merges by the same path)."""
    proc = subprocess.run(["tuitune", "merge", "g", "-o", "out/g-merged"], cwd=ws, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "verification passed" in proc.stdout, proc.stdout
    assert (ws / "out" / "g-merged" / "config.json").is_file()
    merged = subprocess.run(["tuitune", "chat", "out/g-merged", "--prompt", "What is 2 + 3?", "--temperature", "0",
                             "--max-new-tokens", "8", "--dtype", "fp32"], cwd=ws, capture_output=True, text=True,
                            timeout=600)
    tuned = subprocess.run(["tuitune", "chat", "g", "--prompt", "What is 2 + 3?", "--temperature", "0",
                            "--max-new-tokens", "8", "--dtype", "fp32"], cwd=ws, capture_output=True, text=True,
                           timeout=600)
    assert merged.returncode == tuned.returncode == 0, merged.stderr[-1500:] + tuned.stderr[-1500:]
    # The tiny model's greedy answer may be newlines only: the same text either way is what is asserted.
    assert merged.stdout == tuned.stdout
