"""Snapshots of the shell and the Environment step at fixed terminal sizes."""

from __future__ import annotations

import shutil

from test_app import FIXED_REPORT, ONE_GPU, make_app


def test_env_checks_100x32(snap_compare, fixed_workspace):
    async def settle(pilot):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    assert snap_compare(make_app(fixed_workspace), terminal_size=(100, 32), run_before=settle)


def test_env_checks_80x24(snap_compare, fixed_workspace):
    async def settle(pilot):
        await pilot.app.workers.wait_for_complete()
        await pilot.press("down", "down")
        await pilot.pause()

    assert snap_compare(make_app(fixed_workspace), terminal_size=(80, 24), run_before=settle)


def test_env_estimate_fits_on_a_gpu(snap_compare, fixed_workspace, tiny_model):
    shutil.copytree(tiny_model, fixed_workspace / "models" / "tiny-chat")

    async def settle(pilot):
        await pilot.app.workers.wait_for_complete()
        await pilot.press("v")
        await pilot.pause()

    assert snap_compare(make_app(fixed_workspace, report=ONE_GPU), terminal_size=(100, 32), run_before=settle)


def test_help_screen(snap_compare, fixed_workspace):
    async def settle(pilot):
        await pilot.app.workers.wait_for_complete()
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(make_app(fixed_workspace, report=FIXED_REPORT), terminal_size=(100, 32), run_before=settle)
