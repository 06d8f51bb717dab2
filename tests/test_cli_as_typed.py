"""The README's CLI examples as a user types them (#20 item 1).

The real console script (``tuitune`` on PATH, as ``pip install -e .`` puts it), one subprocess a
command, run from the demo workspace (``tuitune demo ws --no-open``, made once for the module)
with relative paths only, as a user in a shell types them; the outputs are checked on disk and
in stdout. Other CLI tests pass absolute temporary paths, which is how ``export -o out/x.gguf``
failing went unseen.

:data:`IN_WORKSPACE` and :data:`FROM_PARENT` are the command lines, exactly as typed; the tests
run them by label, and :func:`test_every_verb_and_action_is_typed_here` fails when a verb of the
step registry, or an action of a verb's parser, has no line here.

One tiny run (``configs/quick.yaml``: the tiny-demo preset cut to 6 short steps) is shared by
every verb that needs one: started detached, saved and stopped at its first step, resumed in
the foreground to its end; a second run (``scratch``) is killed at once and serves ``runs
compare`` and ``runs delete``. Export needs a model whose tokenizer llama.cpp's converter
knows, so ``tuitune demo . --real`` adds SmolLM2-135M-Instruct; its three lines (the slowest)
run in a thread beside the others. The module runs on one xdist worker (group ``cli-as-typed``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.xdist_group("cli-as-typed")

TUITUNE = shutil.which("tuitune")

#: Typed in the demo workspace (its folder is the working folder).
IN_WORKSPACE: dict[str, str] = {
    "env estimate": "tuitune env --estimate models/tiny-chat --method qlora --max-length 256",
    "data convert": "tuitune data convert data/medqa_sample.xlsx -o data/medqa.jsonl --preset medqa",
    "data split": "tuitune data split data/self_cognition.jsonl -o data/split --group-by input",
    "data self-cognition": "tuitune data self-cognition --name Alice --count 20 -o data/alice.jsonl",
    "data inspect": "tuitune data inspect data/split/train.jsonl --model models/tiny-chat",
    "config list": "tuitune config list",
    "config new": "tuitune config new --preset tiny-demo -o configs/quick.yaml",
    "config check": "tuitune config check configs/quick.yaml",
    "config show": "tuitune config show configs/quick.yaml",
    "train": "tuitune train configs/quick.yaml --name quick",
    "runs save": "tuitune runs save quick",
    "runs stop": "tuitune runs stop quick --wait 180",
    "runs resume": "tuitune runs resume quick --foreground",
    "runs follow": "tuitune runs follow quick",
    "runs list": "tuitune runs list --json",
    "runs status": "tuitune runs status quick --json",
    "train scratch": "tuitune train configs/quick.yaml --name scratch",
    "runs stop --kill": "tuitune runs stop scratch --kill",
    "runs compare": "tuitune runs compare quick scratch --json",
    "runs delete": "tuitune runs delete scratch",
    "merge": "tuitune merge quick -o models/quick-merged",
    "chat": "tuitune chat quick --prompts data/questions.txt --max-new-tokens 8 --seed 1",
    "eval": "tuitune eval quick --data data/split/test.jsonl --max-samples 2 --max-new-tokens 8 -o evals/quick",
    "eval --show": "tuitune eval --show evals/quick",
    "eval --mark": "tuitune eval --mark evals/quick 1 good",
    "demo --real": "tuitune demo . --real --no-open",
    "export": "tuitune export models/smollm2-135m-instruct --format gguf -o out/smol.gguf",
    "model import": "tuitune model import out/smol.gguf -o models/smol-imported --no-verify",
}

#: Typed in the workspace's parent folder: the workspace is ``ws``.
FROM_PARENT: dict[str, str] = {
    "demo": "tuitune demo ws --no-open",
    "-w runs list": "tuitune -w ws runs list --json",
    "-w config show": "tuitune -w ws config show ws/configs/quick.yaml",
    "-w train --print-launch": "tuitune -w ws train ws/configs/quick.yaml --print-launch slurm -o ws/out/job.sbatch",
}

#: How configs/quick.yaml differs from the preset: a user's edits, so a run takes seconds.
QUICK_EDITS = {"max_steps: 100": "max_steps: 6", "batch_size: 16": "batch_size: 4", "save_steps: 20": "save_steps: 3",
               "logging_steps: 5": "logging_steps: 1", "every: 20": "every: 3", "max_new_tokens: 48": "max_new_tokens: 4"}


def _line(label: str) -> str:
    return IN_WORKSPACE.get(label) or FROM_PARENT[label]


def typed(label: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the command line ``label`` names, as typed, in ``cwd``."""
    argv = shlex.split(_line(label))
    assert argv[0] == "tuitune" and TUITUNE, "the console script `tuitune` is not on PATH: pip install -e ."
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([TUITUNE, *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def verb_and_action(line: str) -> tuple[str, str | None]:
    """(verb, action) of a typed line, past ``tuitune`` and a leading ``-w DIR``."""
    argv = shlex.split(line)[1:]
    if argv[:1] in (["-w"], ["--workspace"]):
        argv = argv[2:]
    verb, rest = argv[0], argv[1:]
    return verb, (rest[0] if rest and not rest[0].startswith("-") else None)


def _verbs_and_actions() -> dict[str, set[str]]:
    """Each verb of the step registry and its actions, from the argparse tree the CLI builds."""
    from conftest import parser_tree

    from tuitune.steps import COMMANDS

    paths = [path[1:] for path, _parser in parser_tree()]
    verbs = {path[0] for path in paths if len(path) == 1}
    assert verbs == set(COMMANDS), "the parser's verbs are the step registry's"
    return {v: {path[1] for path in paths if len(path) == 2 and path[0] == v} for v in COMMANDS}


def test_every_verb_and_action_is_typed_here():
    """A verb of the step registry, or an action of a verb, with no typed line here fails this test."""
    have: dict[str, set] = {}
    for line in [*IN_WORKSPACE.values(), *FROM_PARENT.values()]:
        verb, action = verb_and_action(line)
        have.setdefault(verb, set()).add(action)
        for token in shlex.split(line):
            assert not token.startswith(("/", "~")), f"{line!r}: only relative paths here, as a user types them"
    missing = [f"{verb} {action}".strip() for verb, actions in _verbs_and_actions().items()
               for action in (sorted(actions) or [None]) if action not in have.get(verb, set()) and
               (action is not None or verb not in have)]
    assert not missing, f"no command line in tests/test_cli_as_typed.py for: {', '.join(missing)}"


# --- the workspace and the shared run ---------------------------------------------------------------

@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("as-typed")


@pytest.fixture(scope="module")
def demo(parent) -> subprocess.CompletedProcess:
    return ok(typed("demo", parent))


@pytest.fixture(scope="module")
def ws(demo, parent, request):
    """The demo workspace. Where the export tests are selected, their three lines (the slowest:
    the real model, converted and read back) start here in a thread, beside the other tests."""
    root = parent / "ws"
    with ThreadPoolExecutor(1) as pool:
        if any("exported" in getattr(item, "fixturenames", ()) for item in request.session.items):
            _BACKGROUND["export"] = pool.submit(_export_and_import, root)
        yield root
    _BACKGROUND.clear()


@pytest.fixture(scope="module")
def quick_config(ws) -> subprocess.CompletedProcess:
    """``config new``, then the user's edits: 6 steps of 4 records, a checkpoint every 3."""
    proc = ok(typed("config new", ws))
    path = ws / "configs" / "quick.yaml"
    text = path.read_text(encoding="utf-8")
    for old, new in QUICK_EDITS.items():
        assert old in text, f"configs/quick.yaml has no {old!r} to edit"
        text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
    return proc


@pytest.fixture(scope="module")
def split(ws) -> subprocess.CompletedProcess:
    return ok(typed("data split", ws))


@pytest.fixture(scope="module")
def quick(ws, quick_config) -> dict[str, subprocess.CompletedProcess]:
    """The shared run: started detached, a save and a stop asked at once (both land on its first
    step, long before its sixth), then resumed in the foreground to its end."""
    done = {"train": ok(typed("train", ws))}
    done["runs save"] = ok(typed("runs save", ws))
    done["runs stop"] = ok(typed("runs stop", ws, timeout=240))
    done["runs resume"] = ok(typed("runs resume", ws, timeout=300))
    return done


@pytest.fixture(scope="module")
def scratch(ws, quick_config) -> dict[str, subprocess.CompletedProcess]:
    """A second run, killed as soon as it started: something to compare with and to delete."""
    return {"train": ok(typed("train scratch", ws)), "runs stop --kill": ok(typed("runs stop --kill", ws))}


def _state(ws: Path, run: str) -> dict:
    return json.loads((ws / "runs" / run / "state.json").read_text(encoding="utf-8"))


# --- the verbs, in the order the README walks through them ------------------------------------------

def test_demo_writes_the_workspace_where_it_was_told(demo, ws):
    for sub in ("data", "configs", "runs", "models"):
        assert (ws / sub).is_dir(), sub
    assert (ws / "models" / "tiny-chat" / "config.json").is_file()
    assert "open it with: cd ws && tuitune" in demo.stdout


def test_env_estimates_a_model_folder_given_relative(ws):
    proc = ok(typed("env estimate", ws))
    assert "max length 256" in proc.stdout and "parameters" in proc.stdout and "GiB" in proc.stdout


def test_data_convert_writes_the_output_it_was_given(ws):
    proc = ok(typed("data convert", ws))
    lines = (ws / "data" / "medqa.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines and "conversation" in json.loads(lines[0])
    assert "medqa.jsonl" in proc.stdout


def test_data_split_writes_both_sides_in_the_folder_it_was_given(split, ws):
    train = (ws / "data" / "split" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    test = (ws / "data" / "split" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    source = (ws / "data" / "self_cognition.jsonl").read_text(encoding="utf-8").splitlines()
    assert train and test and len(train) + len(test) == len(source)
    assert "train.jsonl" in split.stdout and "test.jsonl" in split.stdout


def test_data_self_cognition_writes_the_records_asked_for(ws):
    proc = ok(typed("data self-cognition", ws))
    records = [json.loads(l) for l in (ws / "data" / "alice.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 20 and "Alice" in json.dumps(records, ensure_ascii=False)
    assert "20" in proc.stdout and "data/alice.jsonl" in proc.stdout


def test_data_inspect_reads_the_file_and_the_model_given_relative(split, ws):
    proc = ok(typed("data inspect", ws))
    assert "⟦" in proc.stdout and "record 1" in proc.stdout


def test_config_list_names_the_presets(ws):
    assert "tiny-demo" in ok(typed("config list", ws)).stdout


def test_config_new_check_and_show_the_file_given_relative(quick_config, ws):
    assert (ws / "configs" / "quick.yaml").is_file() and "configs/quick.yaml" in quick_config.stdout
    check = ok(typed("config check", ws))
    assert check.stdout.startswith("ok: configs/quick.yaml")
    show = ok(typed("config show", ws))
    # The model path is resolved against the workspace, which is the folder it was typed in.
    assert str((ws / "models" / "tiny-chat").resolve()) in show.stdout and "max_steps" in show.stdout


def test_train_save_stop_and_resume_the_shared_run(quick, ws):
    assert "started run quick" in quick["train"].stdout
    assert "asked run quick to save" in quick["runs save"].stdout
    assert "run quick stopped" in quick["runs stop"].stdout
    assert "run quick: finished" in quick["runs resume"].stdout + quick["runs resume"].stderr
    assert _state(ws, "quick")["status"] == "finished"
    assert (ws / "runs" / "quick" / "adapter" / "adapter_config.json").is_file()
    events = [json.loads(l) for l in (ws / "runs" / "quick" / "events.jsonl").read_text().splitlines()]
    saved = sorted(e["step"] for e in events if e.get("type") == "checkpoint")
    assert saved[0] < 3, f"the save and stop asked at once land on the first step: {saved}"


def test_runs_follow_and_list_show_the_finished_run(quick, ws):
    follow = ok(typed("runs follow", ws))
    assert "step 6/6" in follow.stdout and "run quick finished" in follow.stderr
    rows = {r["id"]: r for r in json.loads(ok(typed("runs list", ws)).stdout)}
    assert rows["quick"]["status"] == "finished" and rows["quick"]["step"] == 6
    status = json.loads(ok(typed("runs status", ws)).stdout)
    assert (status["id"], status["status"], status["step"], status["total_steps"]) == ("quick", "finished", 6, 6)


def test_runs_kill_compare_and_delete(quick, scratch, ws):
    assert "killed run scratch" in scratch["runs stop --kill"].stdout
    result = json.loads(ok(typed("runs compare", ws)).stdout)
    assert (result["a"], result["b"]) == ("quick", "scratch")
    assert result["figures"]["a"]["status"] == "finished"
    proc = ok(typed("runs delete", ws))
    assert "deleted run scratch" in proc.stdout and not (ws / "runs" / "scratch").exists()


def test_merge_writes_the_folder_given_relative(quick, ws):
    proc = ok(typed("merge", ws, timeout=600))
    out = ws / "models" / "quick-merged"
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    assert "models/quick-merged" in proc.stdout


def test_chat_answers_the_prompts_of_a_file_given_relative(quick, ws):
    (ws / "data" / "questions.txt").write_text("请介绍一下你自己\nWho are you?\n", encoding="utf-8")
    proc = ok(typed("chat", ws))
    answers = [json.loads(l) for l in proc.stdout.splitlines()]
    assert [a["prompt"] for a in answers] == ["请介绍一下你自己", "Who are you?"]
    assert all(a["answer"] and a["tokens"] <= 8 for a in answers)


def test_eval_writes_its_report_where_it_was_told_and_shows_and_marks_it(quick, split, ws):
    proc = ok(typed("eval", ws, timeout=600))
    report = ws / "evals" / "quick"
    for name in ("report.json", "answers.jsonl", "report.md"):
        assert (report / name).is_file(), name
    assert "evals/quick/report.md" in proc.stdout
    assert ok(typed("eval --show", ws)).stdout.strip()
    ok(typed("eval --mark", ws))
    assert "good" in json.dumps(json.loads((report / "report.json").read_text(encoding="utf-8")))


def test_workspace_flag_with_a_relative_folder_from_its_parent(quick, quick_config, ws, parent):
    rows = {r["id"]: r for r in json.loads(ok(typed("-w runs list", parent)).stdout)}
    assert rows["quick"]["status"] == "finished"
    # The file is read from here; the model path inside it from the workspace.
    show = ok(typed("-w config show", parent)).stdout
    assert show.startswith("ws/configs/quick.yaml") and str((ws / "models" / "tiny-chat").resolve()) in show
    ok(typed("-w train --print-launch", parent))
    script = (ws / "out" / "job.sbatch").read_text(encoding="utf-8")
    assert "#SBATCH" in script and "quick" in script


# --- export and import: a model llama.cpp's converter knows (the tiny model's tokenizer it does not) --

_BACKGROUND: dict[str, Future] = {}


def _export_and_import(ws: Path) -> dict[str, subprocess.CompletedProcess]:
    """``demo . --real`` (SmolLM2-135M-Instruct as models/smollm2-135m-instruct), export it to
    out/smol.gguf, import that back: each only where the one before it worked."""
    done = {"demo --real": typed("demo --real", ws, timeout=900)}
    if done["demo --real"].returncode == 0:
        done["export"] = typed("export", ws, timeout=900)
        if done["export"].returncode == 0:
            done["model import"] = typed("model import", ws, timeout=900)
    return done


@pytest.fixture(scope="module")
def exported(ws) -> dict[str, subprocess.CompletedProcess]:
    future = _BACKGROUND.get("export")
    done = future.result() if future is not None else _export_and_import(ws)
    if done["demo --real"].returncode != 0:
        pytest.skip(f"the real model cannot be had here: {done['demo --real'].stderr.strip()[-300:]}")
    return done


def test_export_writes_the_gguf_given_relative(exported, ws):
    proc = ok(exported["export"])
    gguf = ws / "out" / "smol.gguf"
    assert gguf.is_file() and gguf.read_bytes()[:4] == b"GGUF"
    assert "out/smol.gguf" in proc.stdout and "checked:" in proc.stdout
    assert not list((ws / "out").glob(".smol.gguf.partial-*"))


def test_model_import_reads_the_gguf_given_relative(exported, ws):
    assert "model import" in exported, "no GGUF to import: the export failed"
    proc = ok(exported["model import"])
    out = ws / "models" / "smol-imported"
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert "models/smol-imported" in proc.stdout
