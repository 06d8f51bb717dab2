"""The screens' side of #23 section 1 (the probe on the Config, Train and Environment steps), the Train
footer with a GRPO run selected at 80 columns, and the Config form's one-URL-a-line notify.urls."""

from __future__ import annotations

import shutil
from pathlib import Path

from test_app import footer_labels
from test_grpo_watch import DATA as GRPO_DATA, GRPO_ID, GRPO_NOW
from test_train_screen import make_app as train_app, make_run

from tests.test_config import demo_ws  # noqa: F401 - a fixture


async def until(pilot, ok, what: str, tries: int = 400):
    for _ in range(tries):
        if ok():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- the Train footer with a GRPO run at 80 columns ------------------------------------------------

async def test_train_footer_with_a_grpo_run_reads_whole_at_80x24(workspace):
    folder = make_run(workspace, GRPO_ID, created=1796659399.37, log=(GRPO_DATA / "train.log").read_text())
    for name in ("events.jsonl", "state.json"):
        shutil.copy(GRPO_DATA / name, folder / name)
    app = train_app(workspace, now=GRPO_NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.snapshot is not None and screen.snapshot.has_reward, "the GRPO run")
        screen.set_focus(None)
        screen.refresh_bindings()
        await pilot.pause()
        for _ in range(100):
            labels, cut = footer_labels(screen)
            if "m Merge" in labels and "f1 Help" in labels and not cut:
                break
            await pilot.pause(0.05)
        assert not cut, (labels, cut)
        assert "q Quit" in labels and "f1 Help" in labels, labels


# --- notify.urls on the Config form: one URL a line ----------------------------------------------

async def test_notify_urls_are_one_a_line_and_a_comma_stays_in_its_url(demo_ws):
    from textual.widgets import TextArea

    from test_config_screen import make_app as config_app, settle

    from tuitune.config import load_config

    app = config_app(demo_ws)
    async with app.run_test(size=(100, 32)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        area = screen.query_one("#f-notify-urls")
        assert isinstance(area, TextArea)
        urls = ["json://127.0.0.1:8123/hook?tags=a,b", "ntfy://ntfy.sh/tuitune-topic"]
        area.text = "\n".join(urls)
        await settle(app, pilot)
        assert screen.cfg is not None and screen.cfg.notify.urls == urls
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert load_config(demo_ws / "configs" / "tiny-demo.yaml").notify.urls == urls
        screen.load_source(f"file:{demo_ws / 'configs' / 'tiny-demo.yaml'}")
        await settle(app, pilot)
        assert screen.query_one("#f-notify-urls", TextArea).text == "\n".join(urls)


# --- the Probe action on the Config screen: a real probe of the tiny model ------------------------

#: test_probe's big config without its held-out file: packed rows of 1024 tokens, 8 a batch, so that
#: halving the batch is seen in the peak RSS.
BIG = {"training.max_steps": 10, "data.pack": True, "data.max_length": 1024, "training.batch_size": 8}


def probe_ws(tmp_path: Path, tiny_model: Path) -> Path:
    from train_helpers import make_workspace, write_config

    ws = make_workspace(tmp_path / "ws", tiny_model)
    write_config(ws, "big", **BIG)
    return ws


def modal_text(app) -> str:
    """The Probe dialog's verdict and measurements, as plain text on one line."""
    from conftest import widget_text

    return " ".join(" ".join(widget_text(app.screen.query_one(f"#probe-{part}"), width=200).split())
                    for part in ("verdict", "result"))


async def probed(pilot, app):
    """Wait for the Probe dialog's result (a real probe: tens of seconds on a loaded box)."""
    from screens.widgets.config.probe_dialog import ProbeModal

    await until(pilot, lambda: isinstance(app.screen, ProbeModal), "the Probe dialog")
    modal = app.screen
    # The result is set before the dialog has drawn it: wait for its verdict line too (a loaded box is slow).
    await until(pilot, lambda: (modal.result is not None and "verdict:" in modal_text(app)) or "error" in
                modal_text(app) or "could not" in modal_text(app), "the probe's result", tries=20 * 600)
    await pilot.pause()
    assert modal.result is not None, modal_text(app)
    return modal


async def test_config_probe_shows_the_verdict_and_writes_the_change_only_after_a_yes(tmp_path, tiny_model,
                                                                                      monkeypatch):
    import tuitune.train.probe as engine
    from screens.app import TuituneApp
    from screens.widgets.choice import ChoiceScreen, PathScreen
    from screens.widgets.config.source import file_key
    from tuitune.config import load_config

    # One thread for every probe child: the peak RSS a rung measures then does not move with the threads
    # the other test worker leaves it (each thread's arena), so the cap below sits between the rungs.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ws = probe_ws(tmp_path, tiny_model)
    app, seen = TuituneApp(ws, start="config"), []
    async with app.run_test(size=(120, 36), message_hook=seen.append) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        screen = app.screen
        # A preset is not a saved file: the probe asks for the file first, in one line.
        screen.load_source("preset:tiny-demo")
        await pilot.pause()
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert notes(seen)[-1] == "Probe: save the config first (ctrl+s): the probe measures the saved file."
        assert app.screen is screen

        screen.load_source(file_key(ws / "configs" / "big.yaml"))
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.press("ctrl+t")
        modal = await probed(pilot, app)
        text = modal_text(app)
        assert "big.yaml on CPU" in text and "warm-up + 3 timed steps on the longest batch" in text
        assert "(free RAM): fits" in text and "ETA of the whole run: start " in text and "10 steps × " in text
        assert "beside the measured" in text and "verdict: fits, " in text
        peak = modal.result.rungs[0].peak
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "the dialog to close")

        # A box with 15% less than the config's peak free (more than a probe's own spread, see
        # tests/test_probe.py): the ladder's first rung that fits.
        monkeypatch.setattr(engine, "box_memory", lambda: int(peak * 0.85))
        await pilot.press("ctrl+t")
        modal = await probed(pilot, app)
        text = modal_text(app)
        chosen = modal.result.chosen
        assert chosen is not None, text
        assert "(free RAM): does not fit" in text and "ladder (each rung adds to the ones before):" in text
        assert "first that fits, as a change to the config:" in text and "ETA with it: " in text
        assert "verdict: does not fit as it is; with the change below it does (w writes it as a new config)" in text
        for name, value in chosen.changes.items():
            assert f"{name}: " in text and f"-> {str(value).lower() if isinstance(value, bool) else value}" in text

        # w, a name that is taken, and no yes: the file stays as it was.
        mine = ws / "configs" / "big-fits.yaml"
        mine.write_text("# mine\n", encoding="utf-8")

        async def name_it() -> None:
            await pilot.press("w")
            await until(pilot, lambda: isinstance(app.screen, PathScreen), "the name")
            app.screen.query_one("#path-input").value = "configs/big-fits.yaml"
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, ChoiceScreen), "Overwrite?")

        await name_it()
        await pilot.press("c")
        await until(pilot, lambda: app.screen is modal, "back to the result")
        assert mine.read_text(encoding="utf-8") == "# mine\n" and modal.result.written is None
        assert "not written: configs/big-fits.yaml kept" in " ".join(widget_text_of(app, "#probe-hint").split())

        # Again, and yes (overwrite): the config with the change.
        await name_it()
        await pilot.press("o")
        await until(pilot, lambda: app.screen is modal and modal.result.written is not None, "the write")
        written = load_config(mine, workspace=ws)
        before = load_config(ws / "configs" / "big.yaml", workspace=ws)
        for name, value in chosen.changes.items():
            section, key = name.split(".")
            assert getattr(getattr(written, section), key) == value
        assert written.effective_batch_size == before.effective_batch_size
        assert "wrote configs/big-fits.yaml" in widget_text_of(app, "#probe-hint")
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen, "the dialog to close")
        assert notes(seen)[-1].startswith("Wrote configs/big-fits.yaml")
    assert len(list((ws / "probes").iterdir())) == 2   # one probe.json a probe, nothing else
    assert not list((ws / "runs").iterdir())


def notes(messages: list) -> list[str]:
    """The notifications among the messages a ``message_hook`` collected."""
    from textual.notifications import Notify

    return [m.notification.message for m in messages if isinstance(m, Notify)]


def widget_text_of(app, selector: str) -> str:
    from conftest import widget_text

    return widget_text(app.screen.query_one(selector), width=200)


# --- the Probe action on the Train screen: the config picked for a new run -------------------------

def probe_children() -> list:
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if "tuitune.train.probe" in " ".join(p.cmdline())]


async def test_train_probe_shows_the_verdict_before_the_run_starts_and_esc_ends_the_probe(tmp_path, tiny_model):
    from test_app import make_app

    from screens.widgets.config.probe_dialog import ProbeModal
    from screens.widgets.train.modals import NewRunModal
    from train_helpers import make_workspace, write_config

    ws = make_workspace(tmp_path / "ws", tiny_model)
    write_config(ws, "quick", **{"training.max_steps": 4})
    app = make_app(ws, start="train")
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        await pilot.press("p")   # the new-run dialog, probing its highlighted config at once
        await probed(pilot, app)
        text = modal_text(app)
        assert "quick.yaml on CPU" in text and "verdict: fits, " in text and "ETA of the whole run: " in text
        assert "4 steps × " in text and "beside the measured" in text
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, NewRunModal), "back to the new-run dialog")
        shown = " ".join(widget_text_of(app, "#train-new-probe").split())
        assert shown.startswith("probe of quick.yaml: fits, ") and "the run takes about" in shown
        assert not list((ws / "runs").iterdir())   # nothing started: Enter starts the run

        # p again, and Esc while it runs: the probe's process ends, nothing is kept.
        kept = set((ws / "probes").iterdir())
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, ProbeModal), "the Probe dialog")
        await until(pilot, lambda: probe_children(), "the probe's process", tries=20 * 120)
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, NewRunModal), "the dialog to close after the cancel",
                    tries=20 * 30)
        assert not probe_children()
        assert set((ws / "probes").iterdir()) == kept
        assert " ".join(widget_text_of(app, "#train-new-probe").split()).startswith("probe of quick.yaml: fits")


# --- Environment's go/no-go: measured beside the estimate -------------------------------------------

async def test_env_probe_measures_a_config_beside_the_estimate(tmp_path, tiny_model):
    from test_app import make_app

    from screens.widgets.config.probe_dialog import ProbeModal
    from train_helpers import make_workspace, write_config

    ws = make_workspace(tmp_path / "ws", tiny_model)
    write_config(ws, "quick", **{"training.max_steps": 4, "data.max_length": 512, "training.batch_size": 2})
    app = make_app(ws, start="env")
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.press("v")
        await pilot.pause()
        assert app.screen.query_one("#est-config").value == str(ws / "configs" / "quick.yaml")
        app.screen.query_one("#est-probe").focus()
        await pilot.press("enter")
        await probed(pilot, app)
        assert "verdict: fits, " in modal_text(app)
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, ProbeModal), "the dialog to close")
        measured = " ".join(widget_text_of(app, "#env-probe").split())
        assert measured.startswith("measured on this machine (probe of configs/quick.yaml):")
        assert "peak RSS" in measured and "beside the measured" in measured and "verdict: fits, " in measured
        # The estimate form now holds the probed config's settings: the estimate is of the same config.
        values = [app.screen.query_one(f"#est-{k}").value for k in ("model", "maxlen", "batch")]
        assert values == ["models/tiny-chat", "512", "2"]
        estimate = " ".join(widget_text_of(app, "#env-estimate").split())
        assert "lora, max length 512, batch 2, checkpointing off" in estimate, estimate


async def test_env_probe_without_a_config_says_where_to_make_one_and_lists_one_made_later(tmp_path, tiny_model):
    from test_app import make_app

    from train_helpers import make_workspace, write_config

    ws = make_workspace(tmp_path / "ws", tiny_model)
    app = make_app(ws, start="env")
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        await app.workers.wait_for_complete()
        app.screen.set_focus(None)
        await pilot.press("p")
        await pilot.pause()
        said = " ".join(widget_text_of(app, "#env-probe").split())
        assert said == "No config to probe: make one in the Config step (3), then press p here."
        assert app.screen.query_one("#est-probe").disabled
        write_config(ws, "quick")   # as the Config step saves one
        app.switch_mode("config")
        await pilot.pause()
        app.switch_mode("env")
        await pilot.pause()
        assert app.screen.query_one("#est-config").value == str(ws / "configs" / "quick.yaml")
        assert not app.screen.query_one("#est-probe").disabled


# --- snapshots: the Config step with a probe's result ------------------------------------------------

def recorded_result(ws: Path):
    """A probe of configs/big.yaml that does not fit in 1 GiB, whose third rung does (the figures of a real
    probe of the tiny model, fixed so that the snapshot is the same on every box)."""
    from tuitune.train.ladder import GIB, ProbeResult, RungResult

    m = {"longest_batch": [1024] * 8, "sec_per_step": 2.41, "tokens_per_s": 3399.0, "save_s": 0.21,
         "sample_s": 0.25, "total_steps": 10, "start_s": 11.8, "rows": 12}
    words = "start 12s + 10 steps × {:.2f} s + 1 save × 0.21 s + 3 sample rounds × 0.25 s"
    rungs = [RungResult("the config as it is", {}, False, 1.21 * GIB, "does not fit (0.21 GiB over)", m, 37.0,
                        words.format(2.41)),
             RungResult("gradient checkpointing on", {"training.gradient_checkpointing": True}, False, 1.04 * GIB,
                        "does not fit (0.04 GiB over)", {**m, "sec_per_step": 3.02}, 43.1, words.format(3.02)),
             RungResult("batch 4 with grad_accum 2 (the same global batch)",
                        {"training.gradient_checkpointing": True, "training.batch_size": 4, "training.grad_accum": 2},
                        True, 0.83 * GIB, "fits, 0.17 GiB headroom", {**m, "sec_per_step": 3.2}, 44.9,
                        words.format(3.2))]
    hw = {"cpu": "a CPU", "cores": 2, "ram_gib": 23.5, "gpus": []}
    return ProbeResult("configs/big.yaml", ws / "probes" / "big-20261207-171500", "CPU", 1.0 * GIB, "free RAM",
                       {"warmup": 2, "steps": 3, "max_memory": None}, hw, rungs, 1.17 * GIB,
                       "tuitune.vram.cpu, peak RSS",
                       diff=[("training.batch_size", 8, 4), ("training.grad_accum", 1, 2),
                             ("training.gradient_checkpointing", False, True)])


def probed_config_app(ws: Path, tiny_model: Path):
    from screens.app import TuituneApp
    from train_helpers import write_config

    shutil.copytree(tiny_model, ws / "models" / "tiny-chat")
    shutil.copy(Path(__file__).parent.parent / "sample_data" / "self_cognition.jsonl", ws / "data")
    write_config(ws, "big", **BIG)
    return TuituneApp(ws, start="config")


def show_probe(ws: Path):
    async def run_before(pilot):
        from screens.widgets.config.probe_dialog import ProbeModal
        from screens.widgets.config.source import file_key

        app = pilot.app
        await pilot.pause()
        await app.workers.wait_for_complete()
        app.screen.load_source(file_key(ws / "configs" / "big.yaml"))
        await pilot.pause()
        await app.workers.wait_for_complete()
        app.push_screen(ProbeModal(app.workspace, ws / "configs" / "big.yaml", result=recorded_result(ws)))
        await pilot.pause()
        await pilot.pause()

    return run_before


def test_config_probe_result_80x24(snap_compare, fixed_workspace, tiny_model):
    app = probed_config_app(fixed_workspace, tiny_model)
    assert snap_compare(app, terminal_size=(80, 24), run_before=show_probe(fixed_workspace))


def test_config_probe_result_120x36(snap_compare, fixed_workspace, tiny_model):
    app = probed_config_app(fixed_workspace, tiny_model)
    assert snap_compare(app, terminal_size=(120, 36), run_before=show_probe(fixed_workspace))
