"""Experiment tracking (``training.report_to``): files in the run folder, offline without a login."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from conftest import assert_one_line_error, run_cli
from train_helpers import events, make_workspace, write_config

from tuitune.config import check_config, get_preset
from tuitune.config.checks import check_trackers
from tuitune.errors import TuituneError
from tuitune.train.tracking import tracking_env

#: Every variable tracking_env may set or read: a test's environment starts without them.
TRACKER_VARS = ("TENSORBOARD_LOGGING_DIR", "WANDB_MODE", "WANDB_DIR", "WANDB_API_KEY", "WANDB_BASE_URL", "NETRC",
                "SWANLAB_MODE", "SWANLAB_LOG_DIR", "SWANLAB_LOGDIR", "SWANLAB_API_KEY", "SWANLAB_ROOT",
                "SWANLAB_SAVE_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "TRACKIO_DIR", "TRACKIO_SPACE_ID")
ALL = ["tensorboard", "wandb", "swanlab", "mlflow", "trackio"]


@pytest.fixture
def ws(tmp_path, tiny_model) -> Path:
    return make_workspace(tmp_path / "ws", tiny_model)


@pytest.fixture
def home(tmp_path) -> Path:
    """A home folder with no saved logins."""
    h = tmp_path / "home"
    h.mkdir()
    return h


def test_tensorboard_holds_the_losses_of_the_events(ws, monkeypatch):
    """A real run with report_to [tensorboard]: its event files in <run>/tracking/tensorboard hold
    the same loss, step for step, as events.jsonl."""
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    cfg = write_config(ws, "tb", **{"training.max_steps": 3, "training.logging_steps": 1,
                                    "training.batch_size": 4, "training.save_steps": 100,
                                    "evaluation.prompts": [], "training.report_to": ["tensorboard"]})
    proc = run_cli("-w", ws, "train", cfg, "--foreground", "--name", "tb", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = ws / "runs" / "tb"
    board = run / "tracking" / "tensorboard"
    log = (run / "train.log").read_text(encoding="utf-8")
    assert f"tracking: tensorboard writes to {board}" in log
    assert list(board.glob("events.out.tfevents.*")), list(run.rglob("*"))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(board))
    acc.Reload()
    scalars = {e.step: e.value for e in acc.Scalars("train/loss")}
    logged = {e["step"]: e["loss"] for e in events(run, "train")}
    assert sorted(logged) == [1, 2, 3] and sorted(scalars) == sorted(logged), (scalars, logged)
    for step, loss in logged.items():
        assert scalars[step] == pytest.approx(loss, rel=1e-6), (step, scalars[step], loss)


def test_offline_modes_are_chosen_without_a_login(tmp_path, home):
    run = tmp_path / "runs" / "r1"
    setup = tracking_env(ALL, run, {"HOME": str(home)})
    t = run.resolve() / "tracking"
    assert setup.env == {
        "TENSORBOARD_LOGGING_DIR": str(t / "tensorboard"),
        "WANDB_DIR": str(t), "WANDB_MODE": "offline",
        "SWANLAB_LOG_DIR": str(t / "swanlab"), "SWANLAB_LOGDIR": str(t / "swanlab"), "SWANLAB_MODE": "offline",
        "MLFLOW_TRACKING_URI": (t / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true",
        "TRACKIO_DIR": str(t / "trackio"),
    }
    assert set(setup.dirs) == {t / "tensorboard", t, t / "swanlab", t / "trackio"}
    # One line a tracker, each saying where its files go.
    assert len(setup.lines) == 5 and all(line.startswith("tracking: ") for line in setup.lines)
    for line, where in zip(setup.lines, [t / "tensorboard", t / "wandb", t / "swanlab", t / "mlruns", t / "trackio"]):
        assert str(where) in line, (line, where)
    assert "wandb offline" in setup.lines[1] and "wandb sync" in setup.lines[1]
    assert "swanlab offline" in setup.lines[2]
    assert tracking_env([], run, {"HOME": str(home)}).env == {}


def test_a_login_or_the_users_own_settings_are_left_alone(tmp_path, home):
    run = tmp_path / "run"
    # API keys: hosted, so no mode is forced; the local files still go in the run folder.
    setup = tracking_env(["wandb", "swanlab"], run, {"HOME": str(home), "WANDB_API_KEY": "k", "SWANLAB_API_KEY": "k"})
    assert "WANDB_MODE" not in setup.env and "SWANLAB_MODE" not in setup.env
    assert setup.env["WANDB_DIR"] == str(run.resolve() / "tracking")
    assert "hosted service (WANDB_API_KEY)" in setup.lines[0] and "hosted service (SWANLAB_API_KEY)" in setup.lines[1]
    # Saved logins: wandb's entry in ~/.netrc, swanlab's in ~/.swanlab.
    (home / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    (home / ".swanlab").mkdir()
    (home / ".swanlab" / ".netrc").write_text("machine api.swanlab.cn\n  login user\n  password secret\n")
    setup = tracking_env(["wandb", "swanlab"], run, {"HOME": str(home)})
    assert "WANDB_MODE" not in setup.env and "SWANLAB_MODE" not in setup.env
    assert "~/.netrc" in setup.lines[0] and "swanlab login" in setup.lines[1]
    # A netrc for other hosts only is no wandb login.
    (home / ".netrc").write_text("machine example.org login a password b\n")
    assert tracking_env(["wandb"], run, {"HOME": str(home)}).env["WANDB_MODE"] == "offline"
    # Whatever the user set stays as it is, and the line says where it goes.
    mine = {"HOME": str(home), "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "mine"),
            "MLFLOW_TRACKING_URI": "http://mlflow.example:5000", "TENSORBOARD_LOGGING_DIR": str(tmp_path / "tb"),
            "TRACKIO_SPACE_ID": "me/space", "SWANLAB_MODE": "disabled"}
    setup = tracking_env(ALL, run, mine)
    assert not set(setup.env) & set(mine), setup.env
    assert setup.env == {"SWANLAB_LOG_DIR": str(run.resolve() / "tracking" / "swanlab"),
                         "SWANLAB_LOGDIR": str(run.resolve() / "tracking" / "swanlab"),
                         "TRACKIO_DIR": str(run.resolve() / "tracking" / "trackio")}
    lines = dict(zip(ALL, setup.lines))
    assert str(tmp_path / "tb") in lines["tensorboard"] and str(tmp_path / "mine" / "wandb") in lines["wandb"]
    assert "reports to http://mlflow.example:5000" in lines["mlflow"]
    assert "Space me/space" in lines["trackio"] and "disabled" in lines["swanlab"]


def test_the_worker_sets_the_environment_and_makes_the_folders(tmp_path, home, monkeypatch):
    from tuitune.train.runfolder import RunFolder
    from tuitune.train.tracking import use_trackers

    for key in TRACKER_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(home))
    run = RunFolder(tmp_path / "run")
    said = []
    use_trackers(["tensorboard"], run, said.append)
    board = run.path.resolve() / "tracking" / "tensorboard"
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(board) and board.is_dir()
    assert said == [f"tracking: tensorboard writes to {board} (view: tensorboard --logdir {board})"]


def _hide(monkeypatch, *names):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in names else real(name, *a))


def test_a_tracker_that_is_not_installed_is_an_error_with_the_pip_line(monkeypatch, tmp_path):
    cfg = get_preset("tiny-demo").model_copy(deep=True)
    cfg.training.report_to = ["tensorboard", "wandb"]
    _hide(monkeypatch, "wandb")
    issues = check_trackers(cfg)
    assert len(issues) == 1 and issues[0].level == "error" and issues[0].field == "training.report_to"
    assert 'pip install "tuitune[wandb]"' in issues[0].message and "tensorboard" not in issues[0].message
    assert any(i.field == "training.report_to" for i in check_config(cfg, tokenizer=False))
    _hide(monkeypatch, "wandb", "mlflow")
    cfg.training.report_to = ["wandb", "mlflow"]
    assert 'pip install "tuitune[wandb,mlflow]"' in check_trackers(cfg)[0].message
    # A resume skips the launch checks: the worker says the same before it builds anything.
    from tuitune.train.runfolder import RunFolder
    from tuitune.train.tracking import use_trackers

    with pytest.raises(TuituneError, match=r'training.report_to: .*pip install "tuitune\[wandb\]"'):
        use_trackers(["wandb"], RunFolder(tmp_path / "run"), print)


def test_train_refuses_to_launch_without_the_tracker(ws, tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['trackio'] = None\n")
    cfg = write_config(ws, "tr", **{"training.report_to": ["trackio"]})
    proc = run_cli("-w", ws, "train", cfg, env={"PYTHONPATH": str(hide)})
    assert_one_line_error(proc, "training.report_to", 'pip install "tuitune[trackio]"')
    assert not any((ws / "runs").iterdir())
