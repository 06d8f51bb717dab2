"""The CLI surface: help, usage errors, one-line errors, the demo workspace, env."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, assert_one_line_error, run_cli


def test_help_lists_the_built_verbs():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for verb in ("demo", "env"):
        assert verb in proc.stdout


def test_unknown_verb_is_a_usage_error():
    proc = run_cli("frobnicate")
    assert proc.returncode == 2
    assert "usage: tuitune" in proc.stderr
    assert "invalid choice: 'frobnicate'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_flag_is_a_usage_error():
    proc = run_cli("env", "--bogus")
    assert proc.returncode == 2
    assert "unrecognized arguments: --bogus" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_env_json_gives_an_honest_no_gpu_diagnosis():
    proc = run_cli("env", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    for c in report["checks"]:
        assert set(c) == {"name", "status", "detail", "fix"}
        assert c["status"] in ("ok", "warn", "fail")
        if c["status"] != "ok":
            assert c["fix"], f"{c['name']} is {c['status']} but says nothing to do"
    for name in ("python", "torch", "driver", "cuda", "bf16", "bitsandbytes", "deepspeed", "flash-attn",
                 "transformers", "peft", "accelerate", "datasets", "disk", "ram", "hf-cache", "tmux"):
        assert name in checks, name
    # This machine has no GPU: the diagnosis must say so, never "ok".
    assert checks["cuda"]["status"] in ("warn", "fail")
    assert "no CUDA GPU" in checks["cuda"]["detail"]
    assert report["gpus"] == []
    # bitsandbytes 0.50 quantizes nf4 on this CPU; the check tries it for real.
    assert "CPU" in checks["bitsandbytes"]["detail"]


def test_env_table_names_what_to_fix():
    proc = run_cli("env")
    assert proc.returncode == 0, proc.stderr
    # On this CPU box the cuda row is a warning saying what needs a GPU (#20 item 7), never "ok".
    assert "cuda" in proc.stdout and "warn" in proc.stdout
    assert "to fix" in proc.stdout and "to look at" in proc.stdout


def test_demo_writes_the_workspace_without_opening(tmp_path, tiny_model):
    target = tmp_path / "demo"
    proc = run_cli("demo", str(target), "--no-open")
    assert proc.returncode == 0, proc.stderr
    for sub in ("data", "configs", "runs", "models"):
        assert (target / sub).is_dir()
    model = target / "models" / "tiny-chat"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja",
                 "generation_config.json"):
        assert (model / name).is_file(), name
    # A second demo keeps the user's edits.
    note = target / "data" / "mine.txt"
    note.write_text("my notes")
    proc = run_cli("demo", str(target), "--no-open")
    assert proc.returncode == 0
    assert note.read_text() == "my notes"


def test_module_entry_point_matches_console_script():
    out = subprocess.run([sys.executable, "-m", "tuitune", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("tuitune ")


def test_the_tui_without_a_terminal_says_so_instead_of_waiting_unseen(workspace):
    """`tuitune > log` or a job with no terminal: the app could neither draw nor read keys and
    sat there at full CPU; now it is one line and exit 2 (the timeout fails the old behaviour)."""
    proc = run_cli("-w", workspace, timeout=60)
    assert_one_line_error(proc, "the TUI needs a terminal", f"tuitune -w {workspace}")


# --- one vocabulary, every argument with help (#20 item 15) -----------------------------------------

#: Every metavar the CLI shows, and what it means. An argument that reads something else gets a word
#: here first; the same thing never gets two words.
VOCABULARY = {
    "VERB": "a verb of tuitune (the step registry's)",
    "ACTION": "a verb's action: runs stop, data split, model import, ...",
    "MODEL_OR_RUN": "whatever the one resolver (tuitune/sources.py) reads: model or adapter folder, run id, "
                    "RUN:checkpoint-N, RUN:base, hub id",
    "RUN_OR_ADAPTER": "what has an adapter to merge: a run, RUN:checkpoint-N, an adapter folder",
    "MODEL_DIR_OR_HUB_ID": "a model's config.json, in a folder or on the hub (the VRAM estimate)",
    "RUN": "a run id", "RUN_A": "a run id", "RUN_B": "the other run id",
    "CONFIG": "a run config file", "FILE": "a file", "FILE.gguf": "a GGUF file",
    "DIR": "a folder", "IN": "an input file", "OUT": "an output file or folder",
    "NAME": "a name: preset, template, sheet, run, Ollama model",
    "COL": "a spreadsheet column or JSON field", "FORMAT": "a data format", "TEXT": "free text",
    "WORD": "a stop word", "N": "a whole number", "S": "seconds, or a seed", "T": "a temperature",
    "P": "top-p", "K": "top-k", "R": "a rank or a penalty", "RATIO": "a share, 0-1", "SIZE": "a size, 2GB",
    "HOST": "a host name", "PORT": "a TCP port", "slurm": "the one launcher", "good|bad|clear": "a mark",
    "TASKS": "lm-eval tasks: names or task files, comma-separated",
}
#: The arguments the one resolver reads, by (verb, dest): all called MODEL_OR_RUN, and nothing else is.
RESOLVER_ARGUMENTS = {("chat", "model"), ("eval", "target"), ("eval", "against"), ("export", "source")}
#: Words once used for what the resolver reads (the issue's list), never to come back.
RETIRED = {"MODEL", "TARGET", "RUN_OR_MODEL", "SOURCE", "BASE"}


def _arguments():
    """(path, parser, action) for every argument of every parser, bar -h and --version."""
    import argparse

    from conftest import parser_tree

    for path, parser in parser_tree():
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                yield path, parser, action


def _metavars(action) -> list[str]:
    """The words an argument shows in usage (none for a flag or a list of choices)."""
    if action.nargs == 0 or (action.metavar is None and action.choices):
        return []
    if action.metavar is None:
        return [action.dest.upper()]
    return list(action.metavar) if isinstance(action.metavar, tuple) else [action.metavar]


def test_every_action_and_argument_has_help():
    import argparse

    from conftest import parser_tree

    missing = []
    for path, parser in parser_tree():
        if not parser.description:
            missing.append(f"{' '.join(path)}: no description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{' '.join(path)} {c.dest}: no help in the list" for c in action._choices_actions
                            if not c.help]
    for path, _parser, action in _arguments():
        if not action.help or action.help == argparse.SUPPRESS:
            missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}: no help")
    assert not missing, "\n".join(missing)


def test_verbs_are_VERB_and_their_actions_ACTION():
    import argparse

    from conftest import parser_tree

    for path, parser in parser_tree():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert action.metavar == ("VERB" if path == ("tuitune",) else "ACTION"), path


def test_one_vocabulary_and_one_word_for_what_the_resolver_reads():
    from tuitune.commands import MODEL_OR_RUN

    words, resolver = {}, set()
    for path, _parser, action in _arguments():
        where = f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
        for word in _metavars(action):
            words.setdefault(word, []).append(where)
        if MODEL_OR_RUN in _metavars(action):
            resolver.add((path[1], action.dest))
    assert not RETIRED & set(words), {w: words[w] for w in RETIRED & set(words)}
    outside = {w: places for w, places in words.items() if w not in VOCABULARY}
    assert not outside, f"metavars outside the vocabulary (add a word to VOCABULARY, or use one): {outside}"
    assert resolver == RESOLVER_ARGUMENTS


def test_convert_formats_in_the_help_are_the_ones_its_error_lists():
    import re

    from conftest import parser_tree

    from tuitune.data.convert import convert
    from tuitune.errors import TuituneError

    parser = dict(parser_tree())[("tuitune", "data", "convert")]
    (fmt,) = [a for a in parser._actions if "--format" in a.option_strings]
    in_help = [w.strip() for w in fmt.help.split(": ", 1)[1].split(",")]
    with pytest.raises(TuituneError) as err:
        convert(ROOT / "sample_data" / "medqa_sample.xlsx", None, format="bogus")
    in_error = [w.strip() for w in re.split(r"choose one of ", str(err.value))[1].split(",")]
    assert in_help == in_error and len(in_help) >= 14


def test_every_force_says_the_one_behaviour_and_so_does_the_readme():
    from tuitune.fsutil import FORCE_KEPT

    forces = [(path, a) for path, _p, a in _arguments() if "--force" in a.option_strings]
    assert {" ".join(path[1:]) for path, _a in forces} >= {
        "data convert", "data split", "data self-cognition", "config new", "train", "merge", "export", "eval",
        "model import"}
    for path, action in forces:
        assert FORCE_KEPT in action.help, (path, action.help)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`--force`" in readme and "`NAME.replaced-<time>`" in readme
