"""General ability on the real model (SmolLM2-135M-Instruct): the demo's self-cognition LoRA learns the name
and keeps what it knew on the shipped 60-question set (``tuitune eval RUN --bench common``).

Group ``real``, after tests/test_real_model.py (this file sorts after it, and a group's tests run in
collection order on one worker): it scores the run that module trained (the smol-demo recipe, 40 LoRA
steps) instead of training another. Run alone, it trains that run through the same fixtures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from test_real_model import NAME, smol_ws, trained  # noqa: F401 - fixtures, for when this module runs alone

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("real")]


@pytest.fixture(scope="module")
def smol_run(request, tmp_path_factory) -> Path:
    """test_real_model.py's finished run on this worker, else that module's fixtures train it here."""
    for state in sorted(tmp_path_factory.getbasetemp().glob("smol*/ws/runs/smol/state.json")):
        if json.loads(state.read_text()).get("status") == "finished" and (state.parent / "adapter").is_dir():
            return state.parent
    return request.getfixturevalue("trained")


def test_the_self_cognition_lora_keeps_its_general_ability(smol_run):
    """The name learned (the run's last logged sample says it), and on the local set the tuned score stays
    within two of the base's standard errors: the report says kept. The base scores above chance (0.25)."""
    samples = [json.loads(l) for l in (smol_run / "events.jsonl").read_text().splitlines() if '"sample"' in l]
    assert NAME in samples[-1]["answers"][0]["answer"]
    ws = smol_run.parent.parent
    proc = run_cli("eval", "smol", "--bench", "common", "-o", "evals/general", cwd=ws, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads((ws / "evals" / "general" / "report.json").read_text())["bench"]["tasks"]
    b, t = row["baseline"], row["target"]
    assert row["n"] == 60
    assert b["score"] - 0.25 > 2 * b["stderr"], b   # above chance: more than two standard errors
    assert abs(t["score"] - b["score"]) <= 2 * b["stderr"], (b, t)
    assert row["verdict"] == "kept"
    assert proc.stdout.startswith(f"general ability: common {row['metric']} {b['score']:.2f} → "
                                  f"{t['score']:.2f} (kept)")
    print(proc.stdout.splitlines()[0], f"(stderr {b['stderr']:.3f} / {t['stderr']:.3f})")
