"""Several datasets in one run: data.train as a list of files with weight / max_records, mixed by a
seeded interleave, tokenized and cached per file; what the Config and Data steps show of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import assert_one_line_error, run_cli
from train_helpers import make_workspace, write_config


def test_each_source_is_taken_as_its_weight_and_cap_say():
    from tuitune.train.build import mix_indices

    assert mix_indices(10, None, None, 0) == list(range(10))
    assert sorted(mix_indices(10, 2, None, 0)) == sorted(list(range(10)) * 2)
    half = mix_indices(10, 0.5, None, 0)
    assert len(half) == len(set(half)) == 5 and half == mix_indices(10, 0.5, None, 0)   # seeded
    assert half != mix_indices(10, 0.5, None, 1) or half != mix_indices(10, 0.5, None, 2)
    more = mix_indices(10, 1.5, None, 0)
    assert len(more) == 15 and set(more) == set(range(10))
    capped = mix_indices(10, 2, 4, 0)
    assert len(capped) == 8 and len(set(capped)) == 4


def test_the_form_writes_a_mix_on_one_line_and_reads_it_back():
    from tuitune.config.fields import from_text, to_text, validate_field

    value = ["data/a.jsonl", {"path": "data/b.jsonl", "weight": 2.0, "max_records": 500}]
    text = to_text("data.train", value)
    assert text == "data/a.jsonl; data/b.jsonl weight=2 max_records=500"
    assert from_text("data.train", text) == value
    assert from_text("data.train", "data/a.jsonl") == "data/a.jsonl"   # one file stays a plain path
    assert "entry 2 (b.jsonl): weight" in validate_field("data.train", "a.jsonl; b.jsonl weight=0")
    assert "weight=W or max_records=N" in validate_field("data.train", "a.jsonl; b.jsonl wieght=2")


def _conversations(path: Path, n: int, word: str) -> Path:
    path.write_text("".join(json.dumps({"conversation": [{"input": f"{word} {i}?", "output": f"{word} answer {i}."}]})
                            + "\n" for i in range(n)), encoding="utf-8")
    return path


@pytest.fixture
def ws(tmp_path, tiny_model) -> Path:
    ws = make_workspace(tmp_path / "ws", tiny_model)
    _conversations(ws / "data" / "b.jsonl", 20, "beta")
    _conversations(ws / "data" / "c.jsonl", 10, "gamma")
    return ws


def _cfg(ws: Path, train):
    from tuitune.config import RunConfig, get_preset

    d = get_preset("tiny-demo").model_dump(mode="json")
    d["data"]["train"] = train
    return RunConfig.model_validate(d).with_context(workspace=ws)


def test_the_mix_takes_each_file_as_asked_and_adding_one_tokenizes_only_it(ws):
    from tuitune.train.build import build_mix, dataset_builder, describe_mix, load_tokenizer

    cfg = _cfg(ws, ["data/self_cognition.jsonl", {"path": "data/b.jsonl", "weight": 2}])
    rows = describe_mix(cfg)
    assert [(r.path, r.records, r.used) for r in rows] == [("data/self_cognition.jsonl", 150, 150),
                                                         ("data/b.jsonl", 20, 40)]
    assert all(r.tokens > 0 for r in rows) and sum(r.share for r in rows) == pytest.approx(1)
    tok = load_tokenizer(cfg)
    build = dataset_builder(cfg, tok, log=lambda m: None)
    mixed = build_mix(cfg, lambda p: build(p, False), log=lambda m: None)
    assert len(mixed) == 190 and sum(len(x) for x in mixed["input_ids"]) == sum(r.tokens for r in rows)
    again = build_mix(cfg, lambda p: build(p, False), log=lambda m: None)
    assert again["input_ids"] == mixed["input_ids"]      # the same seed, the same interleave
    # Interleaved, not one file after the other: the second file's records are among the first 150.
    assert sum("beta" in tok.decode(ids) for ids in mixed["input_ids"][:150]) >= 10
    # A third file: the two others come from their caches, untouched.
    logs: list[str] = []
    cfg3 = _cfg(ws, [*cfg.data.train, {"path": "data/c.jsonl", "max_records": 4}])
    rows3 = describe_mix(cfg3, tok, log=logs.append)
    assert sum("from cache" in line for line in logs) == 2 and rows3[2].used == 4
    assert [r.tokens for r in rows3[:2]] == [r.tokens for r in rows]


@pytest.mark.slow
def test_a_run_on_a_mix_trains_on_it_and_says_so(ws):
    cfg = write_config(ws, "mix", **{"data.train": ["data/self_cognition.jsonl",
                                                    {"path": "data/b.jsonl", "weight": 0.5}],
                                     "training.max_steps": 2, "training.save_steps": 2, "evaluation.prompts": []})
    proc = run_cli("-w", ws, "config", "check", cfg)
    assert proc.returncode == 0, proc.stderr
    assert "mix: data/b.jsonl: 10 of 20 records" in proc.stdout
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "m", timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    log = (ws / "runs" / "m" / "train.log").read_text(encoding="utf-8")
    assert "mix: data/self_cognition.jsonl: 150 of 150 records" in log and "mix: data/b.jsonl: 10 of 20" in log


@pytest.mark.slow
def test_a_bad_entry_of_the_mix_is_one_line_naming_it(ws):
    cfg = write_config(ws, "missing", **{"data.train": ["data/self_cognition.jsonl", "data/nope.jsonl"]})
    assert_one_line_error(run_cli("-w", ws, "train", cfg), "entry 2 of the mix", "nope.jsonl")
    cfg = write_config(ws, "zero", **{"data.train": ["data/self_cognition.jsonl"]})
    text = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    text["data"]["train"] = ["data/self_cognition.jsonl", {"path": "data/b.jsonl", "weight": 0}]
    cfg.write_text(yaml.safe_dump(text), encoding="utf-8")
    assert_one_line_error(run_cli("-w", ws, "train", cfg), "data.train", "entry 2 (data/b.jsonl)", "weight",
                          "greater than 0")
    assert not (ws / "runs").exists() or not any((ws / "runs").iterdir())


async def _settle(app, pilot):
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


async def test_the_config_and_data_steps_show_the_mix(ws):
    """The Config step's checks list records and tokens per file; the Data step's Tokens tab does the same
    for a mix typed in its File field, and names a bad entry in one line."""
    from textual.widgets import Input, Static

    from screens.app import TuituneApp
    from tuitune.config import save_config

    save_config(_cfg(ws, ["data/self_cognition.jsonl", {"path": "data/b.jsonl", "weight": 0.5}]),
                ws / "configs" / "tiny-demo.yaml")
    app = TuituneApp(ws, start="config")
    async with app.run_test(size=(100, 32)) as pilot:
        await _settle(app, pilot)
        checks = str(app.screen.query_one("#cfg-issues").render())
        assert "Mix" in checks and "data/b.jsonl: 10 of 20 records" in checks, checks
        assert app.screen.query_one("#f-data-train").value == "data/self_cognition.jsonl; data/b.jsonl weight=0.5"
    from tests.test_data_screen import settle as data_settle   # the Data step's tree loader never ends

    app = TuituneApp(ws, start="data")
    async with app.run_test(size=(100, 32)) as pilot:
        await data_settle(app, pilot)
        await pilot.press("f5")
        screen = app.screen
        screen.query_one("#tok-file", Input).value = "data/b.jsonl max_records=5; data/c.jsonl weight=2"
        screen.query_one("#tok-model", Input).value = "models/tiny-chat"
        await pilot.press("ctrl+r")
        await data_settle(app, pilot)
        shown = str(screen.query_one("#tokens-result", Static).render())
        assert "data/b.jsonl: 5 of 20 records" in shown and "data/c.jsonl: 20 of 10 records" in shown, shown
        screen.query_one("#tok-file", Input).value = "data/b.jsonl; data/c.jsonl weight=0"
        await pilot.press("ctrl+r")
        await data_settle(app, pilot)
        shown = str(screen.query_one("#tokens-result", Static).render())
        assert "entry 2 (data/c.jsonl): weight" in shown and "\n" not in shown.strip(), shown
