"""The run config: schema, safe YAML with line numbers, presets, checks, CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, assert_one_line_error, run_cli
from tuitune.config import (
    PRESETS,
    RunConfig,
    check_config,
    diff_against,
    dump_config,
    get_preset,
    load_config,
    save_config,
)
from tuitune.errors import TuituneError

TINY_DEMO_RECIPE = {"lora.r": 16, "lora.alpha": 32, "lora.dropout": 0.0, "training.lr": 5e-3,
                    "training.batch_size": 16}


def write_data(ws: Path, name: str = "data/self_cognition.jsonl") -> Path:
    p = ws / name
    p.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"conversation": [{"input": "请介绍一下你自己", "output": "我是Alice的小助手。"}]}] * 3
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return p


@pytest.fixture
def demo_ws(workspace, tiny_model) -> Path:
    """A workspace with the tiny model, a data file and configs/tiny-demo.yaml."""
    shutil.copytree(tiny_model, workspace / "models" / "tiny-chat")
    write_data(workspace)
    save_config(get_preset("tiny-demo"), workspace / "configs" / "tiny-demo.yaml")
    return workspace


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (old, text)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(path: Path, needle: str) -> int:
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if needle in line and not line.lstrip().startswith("#"):
            return n
    raise AssertionError(needle)


# --- presets and round trips ----------------------------------------------------------------

def test_presets_are_the_tutorials_jobs_and_all_valid():
    assert set(PRESETS) == {"assistant", "medqa", "pretrain", "full-small", "dpo", "orpo", "tiny-demo", "smol-demo",
                            "grpo", "smol-grpo"}
    for name in PRESETS:
        cfg = get_preset(name)
        assert cfg.preset == name
    assert get_preset("medqa").data.system and "医生" in get_preset("medqa").data.system
    assert get_preset("pretrain").task == "pretrain"
    assert get_preset("full-small").method == "full"
    assert get_preset("assistant").method == "qlora"
    assert (get_preset("dpo").task, get_preset("orpo").task) == ("dpo", "orpo")
    assert not get_preset("dpo").data.pack and get_preset("dpo").preference.beta == 0.1


def test_defaults_follow_xtuner_qlora():
    cfg = RunConfig(model="m")
    assert (cfg.training.lr, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (2e-4, 64, 16, 0.1)
    assert (cfg.training.warmup_ratio, cfg.training.scheduler, cfg.training.max_grad_norm) == (0.03, "cosine", 1.0)
    assert cfg.training.save_total_limit == 2 and cfg.trust_remote_code is False


def test_tiny_demo_is_the_measured_recipe():
    cfg = get_preset("tiny-demo")
    flat = {"lora.r": cfg.lora.r, "lora.alpha": cfg.lora.alpha, "lora.dropout": cfg.lora.dropout,
            "training.lr": cfg.training.lr, "training.batch_size": cfg.training.batch_size}
    assert flat == TINY_DEMO_RECIPE
    assert cfg.lora.target_modules == "all-linear"
    assert cfg.lora.modules_to_save == ["embed_tokens", "lm_head"]
    assert "请介绍一下你自己" in cfg.evaluation.prompts
    # several checkpoints in one run
    assert cfg.training.max_steps // cfg.training.save_steps >= 3
    assert cfg.training.precision in ("fp32", "auto") and cfg.method == "lora"


def test_unknown_preset_suggests_the_close_one():
    with pytest.raises(TuituneError, match="did you mean 'tiny-demo'"):
        get_preset("tiny-dem")


@pytest.mark.parametrize("name", list(PRESETS))
def test_save_then_load_gives_the_same_config(name, workspace):
    path = workspace / "configs" / f"{name}.yaml"
    save_config(get_preset(name), path)
    again = load_config(path)
    assert again == get_preset(name)
    assert again.workspace == workspace  # a file in <ws>/configs/ belongs to <ws>
    assert diff_against(again) == []


@pytest.mark.parametrize("name, where", [("tiny-demo", "configs"), ("smol-demo", "real/configs"),
                                        ("smol-grpo", "real/configs")])
def test_shipped_demo_yamls_are_the_presets(name, where):
    shipped = ROOT / "sample_data" / where / f"{name}.yaml"
    assert shipped.read_text(encoding="utf-8") == dump_config(get_preset(name))


def test_demo_workspace_gets_the_tiny_demo_config(tmp_path, tiny_model):
    from tuitune.sample import write_demo_workspace

    ws = write_demo_workspace(tmp_path / "demo")
    cfg = load_config(ws.root / "configs" / "tiny-demo.yaml")
    assert (Path(cfg.model_path()) / "config.json").is_file()
    assert cfg.resolve(cfg.data.train).is_file(), "the sample self-cognition data is where the preset looks"


def test_relative_paths_resolve_against_the_workspace(workspace, tmp_path):
    path = workspace / "configs" / "a.yaml"
    save_config(get_preset("tiny-demo"), path)
    cfg = load_config(path)
    assert cfg.resolve(cfg.data.train) == workspace / "data" / "self_cognition.jsonl"
    assert cfg.model_path() == str(workspace / "models" / "tiny-chat")
    # an explicit workspace wins; a hub id stays a hub id
    other = load_config(path, workspace=tmp_path)
    assert other.resolve(other.data.train) == tmp_path / "data" / "self_cognition.jsonl"
    assert get_preset("assistant").model_path() == "internlm/internlm2-chat-1_8b"


def test_effective_batch_size():
    cfg = RunConfig.model_validate({"model": "m", "training": {"batch_size": 4, "grad_accum": 8},
                                    "distributed": {"gpus": 2}})
    assert cfg.effective_batch_size == 64


def test_every_field_has_a_one_line_description():
    from tuitune.config import iter_fields

    for name, info in iter_fields():
        assert info.description and "\n" not in info.description, name


# --- bad input: one error line naming the field and the line ---------------------------------

@pytest.fixture
def cfg_file(workspace) -> Path:
    path = workspace / "configs" / "run.yaml"
    save_config(get_preset("tiny-demo"), path)
    write_data(workspace)
    return path


def test_yaml_syntax_error(cfg_file, cli):
    edit(cfg_file, "  r: 16", "  r: [16")
    proc = cli("config", "check", cfg_file, "--no-machine")
    line = assert_one_line_error(proc, "run.yaml", "yaml syntax")
    assert "line " in line


def test_wrong_type(cfg_file, cli):
    edit(cfg_file, "  batch_size: 16", "  batch_size: sixteen")
    proc = cli("config", "check", cfg_file, "--no-machine")
    assert_one_line_error(proc, "training.batch_size", f"line {line_of(cfg_file, 'batch_size: sixteen')}",
                          "sixteen")


@pytest.mark.parametrize("old,new,field", [
    ("  lr: 0.005", "  lr: 0", "training.lr"),
    ("  lr: 0.005", "  lr: -2e-4", "training.lr"),
    ("  r: 16", "  r: 0", "lora.r"),
    ("  dropout: 0.0", "  dropout: 1.0", "lora.dropout"),
    ("  max_length: 256", "  max_length: 0", "data.max_length"),
    ("  max_length: 256", "  max_length: -5", "data.max_length"),
])
def test_out_of_range(cfg_file, old, new, field):
    edit(cfg_file, old, new)
    with pytest.raises(TuituneError) as exc:
        load_config(cfg_file)
    msg = str(exc.value)
    assert field in msg and f"line {line_of(cfg_file, new.strip())}" in msg and "out of range" in msg


def test_out_of_range_from_the_cli(cfg_file, cli):
    edit(cfg_file, "  lr: 0.005", "  lr: 0")
    proc = cli("config", "check", cfg_file, "--no-machine")
    assert_one_line_error(proc, "training.lr", f"line {line_of(cfg_file, 'lr: 0')}", "> 0")


def test_unknown_key_with_suggestion(cfg_file, cli):
    edit(cfg_file, "  warmup_ratio: 0.03", "  warmup_ration: 0.03")
    proc = cli("config", "check", cfg_file, "--no-machine")
    assert_one_line_error(proc, "training.warmup_ration", f"line {line_of(cfg_file, 'warmup_ration')}",
                          "did you mean 'warmup_ratio'")


def test_unknown_top_level_section(cfg_file):
    edit(cfg_file, "training:", "trainig:")
    with pytest.raises(TuituneError, match="did you mean 'training'"):
        load_config(cfg_file)


def test_missing_data_file(demo_ws, cli):
    cfg_file = demo_ws / "configs" / "tiny-demo.yaml"
    (demo_ws / "data" / "self_cognition.jsonl").unlink()
    proc = cli("config", "check", cfg_file, "--no-machine")
    assert_one_line_error(proc, "data.train", f"line {line_of(cfg_file, 'train: data/')}", "does not exist")


def test_python_tag_is_refused_never_constructed(cfg_file, tmp_path, cli):
    marker = tmp_path / "pwned"
    edit(cfg_file, "  system: null", f"  system: !!python/object/apply:os.system ['touch {marker}']")
    proc = cli("config", "check", cfg_file, "--no-machine")
    assert_one_line_error(proc, "data.system", f"line {line_of(cfg_file, 'python/object')}", "never executed")
    with pytest.raises(TuituneError, match="plain data"):
        load_config(cfg_file)
    assert not marker.exists()


def test_empty_and_non_mapping_files(workspace):
    p = workspace / "configs" / "e.yaml"
    p.write_text("", encoding="utf-8")
    with pytest.raises(TuituneError, match="empty"):
        load_config(p)
    p.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(TuituneError, match="mapping"):
        load_config(p)


def test_cross_field_node_rank(workspace):
    with pytest.raises(TuituneError, match="node_rank"):
        from tuitune.config import loads_config
        loads_config("model: m\ndistributed:\n  nnodes: 2\n  node_rank: 2\n")


def test_unknown_template_lists_the_named_ones():
    from tuitune.config import loads_config
    from tuitune.config.schema import template_names

    if not template_names():
        pytest.skip("tuitune.templates is not there yet")
    with pytest.raises(TuituneError, match="line 2: template: unknown template"):
        loads_config("model: m\ntemplate: internlm3_chat\n")


# --- checks against files and this machine ------------------------------------------------------

def _issues(cfg, **kw):
    return {(i.level, i.field): i for i in check_config(cfg, **kw)}


def test_a_good_config_has_no_errors(demo_ws):
    cfg = load_config(demo_ws / "configs" / "tiny-demo.yaml")
    issues = check_config(cfg)
    assert [i for i in issues if i.level == "error"] == []


def test_model_folder_without_config_or_tokenizer(demo_ws):
    model = demo_ws / "models" / "tiny-chat"
    cfg = load_config(demo_ws / "configs" / "tiny-demo.yaml")
    (model / "config.json").unlink()
    issue = _issues(cfg, machine=False)[("error", "model")]
    assert "config.json" in issue.message and issue.line == line_of(demo_ws / "configs" / "tiny-demo.yaml", "model:")
    for f in model.glob("tokenizer*"):
        f.unlink()
    msgs = [i.message for i in check_config(cfg, machine=False) if i.field == "model"]
    assert any("no tokenizer" in m for m in msgs)


def test_gpus_more_than_the_machine_has(demo_ws):
    import torch

    from tuitune.doctor import gpu_inventory

    cfg = load_config(demo_ws / "configs" / "tiny-demo.yaml")
    cfg.distributed.gpus = len(gpu_inventory()) + 2
    issues = _issues(cfg, tokenizer=False)
    if torch.cuda.is_available():
        assert "this machine has" in issues[("error", "distributed.gpus")].message
    else:
        # No GPU: N CPU processes (gloo) run the multi-GPU code path; said, not refused.
        assert "no GPU here" in issues[("warn", "distributed.gpus")].message
    cfg.distributed.gpus = 1
    assert not [k for k in _issues(cfg, tokenizer=False) if k[1] == "distributed.gpus"]


def test_precision_this_hardware_lacks(demo_ws):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only case")
    cfg = load_config(demo_ws / "configs" / "tiny-demo.yaml")
    cfg.training.precision = "fp16"
    assert ("error", "training.precision") in _issues(cfg)
    cfg.training.precision = "bf16"
    assert ("warn", "training.precision") in _issues(cfg)


def test_qlora_bf16_compute_on_cpu_warns(demo_ws):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only case")
    cfg = load_config(demo_ws / "configs" / "tiny-demo.yaml")
    cfg.method = "qlora"
    cfg.quantization.compute_dtype = "bfloat16"
    issues = _issues(cfg, tokenizer=False)
    assert ("warn", "quantization.compute_dtype") in issues
    assert not [k for k in issues if k[0] == "error"], "bitsandbytes 0.50 runs nf4 on the CPU"


def test_qlora_with_a_broken_bitsandbytes(demo_ws, tmp_path):
    # A bitsandbytes that does not import (as a wheel built for another CUDA): shadow it.
    fake = tmp_path / "shadow" / "bitsandbytes"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('libbitsandbytes_cuda.so: cannot open')\n")
    cfg_path = demo_ws / "configs" / "tiny-demo.yaml"
    edit(cfg_path, "method: lora", "method: qlora")
    proc = run_cli("config", "check", cfg_path, env={"PYTHONPATH": f"{fake.parent}:{ROOT}"})
    assert_one_line_error(proc, "method", "bitsandbytes", "method: lora")


def test_deepspeed_chosen(demo_ws):
    import importlib.util

    cfg = load_config(demo_ws / "configs" / "tiny-demo.yaml")
    cfg.distributed.deepspeed = "zero2"
    issues = _issues(cfg, tokenizer=False)
    if importlib.util.find_spec("deepspeed") is None:
        assert ("error", "distributed.deepspeed") in issues
    else:
        import torch
        assert (("warn", "distributed.deepspeed") in issues) == (not torch.cuda.is_available())


def test_deepspeed_not_installed(demo_ws, tmp_path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    # find_spec sees a namespace-less stub that is not a package: make deepspeed invisible instead.
    code = ("import sys, importlib.util; real = importlib.util.find_spec; "
            "importlib.util.find_spec = lambda n, *a: None if n == 'deepspeed' else real(n, *a); "
            "from tuitune.cli import main; sys.exit(main(sys.argv[1:]))")
    cfg_path = demo_ws / "configs" / "tiny-demo.yaml"
    edit(cfg_path, "  deepspeed: none", "  deepspeed: zero3")
    proc = subprocess.run([sys.executable, "-c", code, "config", "check", str(cfg_path)],
                          capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc, "distributed.deepspeed", "not installed", "deepspeed: none",
                          f"line {line_of(cfg_path, 'deepspeed: zero3')}")


def test_prompts_the_template_cannot_render(demo_ws):
    from tuitune.config.schema import template_names

    if not template_names():
        pytest.skip("tuitune.templates is not there yet")
    model = demo_ws / "models" / "tiny-chat"
    # A tokenizer without a chat template cannot render with template auto.
    tc = model / "tokenizer_config.json"
    data = json.loads(tc.read_text())
    data.pop("chat_template", None)
    tc.write_text(json.dumps(data))
    for f in model.glob("chat_template*"):
        f.unlink()
    cfg = load_config(demo_ws / "configs" / "tiny-demo.yaml")
    errors = [i for i in check_config(cfg, machine=False) if i.level == "error"]
    assert errors and errors[0].field.startswith("evaluation.prompts"), errors
    assert "choose a named template" in errors[0].message
    cfg.template = "chatml"
    assert [i for i in check_config(cfg, machine=False) if i.level == "error"] == []


# --- the CLI ----------------------------------------------------------------------------------

def test_cli_list_new_show_check(demo_ws, cli):
    proc = cli("config", "list")
    assert proc.returncode == 0
    for name in PRESETS:
        assert name in proc.stdout
    out = demo_ws / "configs" / "mine.yaml"
    proc = cli("config", "new", "--preset", "tiny-demo", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert load_config(out) == get_preset("tiny-demo")
    # never overwrites without --force
    assert_one_line_error(cli("config", "new", "--preset", "tiny-demo", "-o", out), "exists", "--force")

    edit(out, "  lr: 0.005", "  lr: 0.001")
    proc = cli("config", "show", out)
    assert proc.returncode == 0, proc.stderr
    assert str(demo_ws / "data" / "self_cognition.jsonl") in proc.stdout  # resolved
    assert "peak learning rate" in proc.stdout  # descriptions
    assert "training.lr: 0.005 -> 0.001" in proc.stdout  # the diff against the preset
    assert "effective batch size: 16" in proc.stdout

    proc = cli("config", "check", out)
    assert proc.returncode == 0, proc.stderr
    assert "ok:" in proc.stdout and "effective batch 16" in proc.stdout


def test_cli_check_json_and_unknown_preset(demo_ws, cli):
    proc = cli("config", "check", demo_ws / "configs" / "tiny-demo.yaml", "--json", "--no-machine")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] is True and data["effective_batch_size"] == 16
    assert_one_line_error(cli("config", "new", "--preset", "medq", "-o", demo_ws / "x.yaml"),
                          "did you mean 'medqa'")
    assert_one_line_error(cli("config", "check", demo_ws / "nope.yaml"), "nope.yaml", "config new")


def test_import_stays_light():
    code = ("import sys, tuitune.config, tuitune.commands.config; "
            "bad = [m for m in ('torch', 'transformers', 'peft', 'textual') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code = ("import sys, screens.config; "
            "bad = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_saved_yaml_is_plain_and_commented(workspace):
    path = save_config(get_preset("medqa"), workspace / "configs" / "m.yaml")
    text = path.read_text(encoding="utf-8")
    assert "# peak learning rate" in text and "!!" not in text
    assert yaml.safe_load(text)["data"]["system"] == get_preset("medqa").data.system


def test_data_that_is_not_json_yet(demo_ws):
    (demo_ws / "data" / "medqa.xlsx").write_bytes(b"PK")
    cfg = load_config(demo_ws / "configs" / "tiny-demo.yaml")
    cfg.data.train = "data/medqa.xlsx"
    issue = _issues(cfg, machine=False, tokenizer=False)[("error", "data.train")]
    assert "tuitune data convert data/medqa.xlsx" in issue.message


def test_model_with_its_own_code_needs_trust_remote_code(demo_ws):
    conf = demo_ws / "models" / "tiny-chat" / "config.json"
    data = json.loads(conf.read_text())
    data["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
    conf.write_text(json.dumps(data))
    cfg = load_config(demo_ws / "configs" / "tiny-demo.yaml")
    issue = _issues(cfg, machine=False, tokenizer=False)[("error", "trust_remote_code")]
    assert "set trust_remote_code: true" in issue.message
    cfg.trust_remote_code = True
    assert ("error", "trust_remote_code") not in _issues(cfg, machine=False, tokenizer=False)


def test_hub_model_offline_and_not_cached(demo_ws, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    cfg = get_preset("full-small")
    cfg.with_context(workspace=demo_ws)
    from tuitune.config.checks import _check_hub_model

    issues = _check_hub_model(cfg)
    assert issues and "hf download Qwen/Qwen2.5-0.5B-Instruct" in issues[0].message


def test_unknown_preset_name_in_a_file_warns(demo_ws):
    cfg = load_config(demo_ws / "configs" / "tiny-demo.yaml")
    cfg.preset = "tiny"
    assert ("warn", "preset") in _issues(cfg, machine=False, tokenizer=False)
