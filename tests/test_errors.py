"""Errors that know their field (#21 item 6): the CLI's line names the flag, a screen's the label.

The engine's messages are raised here as the engine raises them; ``str()`` is exactly the line
the CLI prints, and ``said(labels)`` the line a screen shows, with the labels that screen has.
"""

from __future__ import annotations

import pytest

from tuitune.errors import FIELD, Note, TuituneError, said


def _raised(call) -> TuituneError:
    with pytest.raises(TuituneError) as info:
        call()
    return info.value


def test_a_field_reads_as_the_flag_in_the_cli_and_as_the_label_on_a_screen():
    err = TuituneError(f"{FIELD} 1.5: must be between 0 and 1", field="split.test_ratio")
    assert str(err) == "--test-ratio 1.5: must be between 0 and 1"
    assert (err.field, err.flag) == ("split.test_ratio", "--test-ratio")
    assert err.said({"test_ratio": "Test ratio"}) == "Test ratio 1.5: must be between 0 and 1"
    # A screen with no label for it: the field's words, never a flag.
    assert err.said() == "test ratio 1.5: must be between 0 and 1"
    # A fix said per surface; a flag of another form.
    err = TuituneError("x.xlsx: sheet 'N' is empty; ", field="sheet", fix=f"pick another with {FIELD}",
                       tui_fix=f"pick another in the {FIELD} list")
    assert str(err) == "x.xlsx: sheet 'N' is empty; pick another with --sheet"
    assert err.said({"sheet": "Sheet"}) == "x.xlsx: sheet 'N' is empty; pick another in the Sheet list"
    note = Note(f"skipped ({FIELD})", field="verify", flag="--no-verify")
    assert note == "skipped (--no-verify)" and f"verification {note}" == "verification skipped (--no-verify)"
    assert said(note, {"verify": "verify off"}) == "skipped (verify off)" and said("plain", {}) == "plain"
    # A value that looks like a template is only a value.
    assert str(TuituneError(f"{FIELD} '{{}}': bad", field="name")) == "--name '{}': bad"


def test_merge_errors_name_the_merge_screens_fields(tmp_path):
    from screens.merge import LABELS
    from tuitune.fsutil import refuse_existing
    from tuitune.merge import parse_size

    err = _raised(lambda: parse_size("abc"))
    assert str(err) == "--max-shard-size 'abc': write a size such as 500MB, 2GB or 1GiB"
    assert err.said(LABELS) == "max shard 'abc': write a size such as 500MB, 2GB or 1GiB"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_text("x")
    err = _raised(lambda: refuse_existing(tmp_path / "out"))
    kept = "(the old one is kept beside it as NAME.replaced-<time>, never deleted)"
    assert str(err) == f"{tmp_path / 'out'}: folder exists and is not empty; choose another output, or pass --force " \
                       f"to replace it {kept}"
    assert err.said(LABELS).endswith(f"; choose another output, or choose Overwrite to replace it {kept}")
    assert "--" not in err.said(LABELS)


def test_a_merge_that_needs_another_base_says_the_shell_command_on_the_screen(tmp_path):
    import json

    from screens.merge import LABELS
    from tuitune.sources import resolve

    ad = tmp_path / "adapter"
    ad.mkdir()
    (ad / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/not-here"}))
    (ad / "adapter_model.safetensors").write_bytes(b"")
    err = _raised(lambda: resolve(str(ad), tmp_path, need="adapter"))
    assert str(err).endswith("is not a local folder; download it and pass --base DIR"), str(err)
    assert err.said(LABELS).endswith("download it and merge from a shell with `tuitune merge RUN --base DIR`")


def test_chat_load_errors_name_the_chat_steps_settings():
    from screens.widgets.chat.settings_panel import LABELS
    from tuitune.loading import load_model

    err = _raised(lambda: load_model("models/x", bits=3))
    assert str(err) == "--bits must be 4 or 8, got 3"
    assert err.said(LABELS) == "4/8-bit loading must be 4 or 8, got 3"


def test_the_data_step_says_the_sheet_and_the_convert_tab_where_the_cli_says_flags(tmp_path):
    from screens.widgets.data.tab_form import words
    from tuitune.data.io import refuse_table
    from tuitune.data.tabular import NoSheet

    err = NoSheet(tmp_path / "m.xlsx", "Nope", ("QA", "Notes"))
    assert str(err) == f"{tmp_path / 'm.xlsx'}: no sheet 'Nope'; sheets: QA, Notes; pick one with --sheet"
    assert words("convert", str(err)).endswith("; sheets: QA, Notes; pick one in the Sheet list")
    (tmp_path / "t.csv").write_text("q,a\n")
    err = _raised(lambda: refuse_table(tmp_path / "t.csv"))
    assert str(err).endswith("not conversation records; convert it first: tuitune data convert "
                             f"{tmp_path / 't.csv'} -o data/t.jsonl")
    assert words("split", err).endswith("not conversation records; convert it first in the Convert tab (F3)")


def test_no_screen_rewrites_engine_messages_with_flag_maps():
    """The four flag-to-label maps and the regex rewriter (tui_message) are gone from every screen."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "screens"
    gone = ("MERGE_LABELS", "FLAG_LABELS", "TUI_FIXES", "engine_error", "engine_words", "TO_LABELS", "EVAL_LABELS",
            "tui_message")
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not [g for g in gone if g in text], path


def test_evaluate_errors_name_the_evaluate_screens_fields(tmp_path, tiny_model):
    """tuitune/eval's errors carry their field: the CLI names the flag, the Evaluate screen its control."""
    from screens.evaluate import LABELS
    from tuitune.eval.heldout import default_data
    from tuitune.eval.run import plan
    from tuitune.sources import resolve

    err = _raised(lambda: plan(str(tiny_model), tmp_path, max_samples=0))
    assert str(err) == "--max-samples 0: give 1 or more (leave it out for every record)"
    assert err.said(LABELS) == "samples 0: give 1 or more (leave it out for every record)"
    err = _raised(lambda: plan(str(tiny_model), tmp_path, against="base"))
    assert str(err).endswith("so its base is unknown; give --against MODEL")
    assert err.said(LABELS).endswith("so its base is unknown; give the against field")
    err = _raised(lambda: default_data(resolve(str(tiny_model), tmp_path), None))
    assert str(err).endswith("is not a run, so no held-out file belongs to it; give --data FILE "
                             "(a conversation JSONL the model never trained on)")
    assert err.said(LABELS).endswith("is not a run, so no held-out file belongs to it; give a file in the data "
                                     "field (a conversation JSONL the model never trained on)")
