"""The trackers' table (tuitune.train.tracking.TRACKERS): every row, a new one included, is
installable as an extra, accepted by the schema and set up inside the run folder's tracking/."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from tuitune.config import TrainingConfig, field_info
from tuitune.train.runfolder import RunFolder
from tuitune.train.tracking import TRACKER_NAMES, TRACKERS, tracking_env

ROOT = Path(__file__).resolve().parent.parent


def test_every_tracker_is_an_extra_and_a_name_the_schema_takes():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert set(TRACKER_NAMES) <= set(extras), set(TRACKER_NAMES) - set(extras)
    for name in TRACKER_NAMES:
        assert TrainingConfig(report_to=[f" {name.upper()} ", name]).report_to == [name]
    with pytest.raises(ValidationError, match="choose from: " + ", ".join(TRACKER_NAMES)):
        TrainingConfig(report_to=["tensorbored"])
    assert ", ".join(TRACKER_NAMES) in field_info("training.report_to").description


@pytest.mark.parametrize("name", TRACKER_NAMES)
def test_each_tracker_alone_writes_in_the_run_folder(tmp_path, name):
    """With nothing set (no login, a bare home), a tracker's files go under <run>/tracking/, and
    its one line names the place (and, for a hosted service, the offline mode and the sync line)."""
    run = RunFolder(tmp_path / "runs" / "r")
    home = tmp_path / "home"
    home.mkdir()
    setup = tracking_env([name], run.path, {"HOME": str(home)})
    inside = run.path.resolve() / "tracking"
    assert setup.env, name
    for key, value in setup.env.items():
        if value.startswith(("/", "file:")):
            assert value.startswith((str(inside), inside.as_uri())), (key, value)
    assert all(d.is_relative_to(inside) for d in setup.dirs), setup.dirs
    t = TRACKERS[name]
    assert len(setup.lines) == 1 and setup.lines[0].startswith(f"tracking: {name} ")
    folder = t.folder_in(run.path.resolve())
    assert str(folder) in setup.lines[0] or folder.as_uri() in setup.lines[0], setup.lines[0]
    if t.hosted:
        assert setup.env[t.hosted.mode_var] == "offline" and "upload later: " in setup.lines[0]
