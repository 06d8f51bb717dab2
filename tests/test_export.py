"""tuitune export: bad input on the tiny model (one line, nothing written); the real model in test_real_model."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import assert_one_line_error, run_cli


def test_no_converter_says_where_it_looked(tiny_model, tmp_path):
    env = {"TUITUNE_CACHE": str(tmp_path / "cache"), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "LLAMA_CPP_DIR": ""}
    proc = run_cli("export", tiny_model, "--format", "gguf", "-o", tmp_path / "t.gguf", "--llama-cpp",
                   tmp_path / "nowhere", env=env, timeout=300)
    assert_one_line_error(proc, "no GGUF converter", str(tmp_path / "nowhere"), "pip download --no-deps llama-cpp-python",
                          "--llama-cpp DIR")
    assert not (tmp_path / "t.gguf").exists() and not list(tmp_path.glob(".t.gguf.partial-*"))


def test_an_existing_output_and_a_quantized_model_are_refused(tiny_model, tmp_path):
    out = tmp_path / "t.gguf"
    out.write_text("mine")
    assert_one_line_error(run_cli("export", tiny_model, "--format", "gguf", "-o", out), str(out), "--force")
    assert out.read_text() == "mine"
    q = tmp_path / "q"
    shutil.copytree(tiny_model, q)
    cfg = json.loads((q / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (q / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(run_cli("export", q, "--format", "gguf", "-o", tmp_path / "q.gguf"), "stored quantized",
                          "16-bit")


def test_the_tiny_models_tokenizer_is_one_llama_cpp_does_not_know(tiny_model, tmp_path):
    """llama.cpp's converter recognises a tokenizer by its pre-tokenizer; the tiny model's is made here.
    Nothing is left behind, not even the folder `-o out/tiny.gguf` named."""
    proc = run_cli("export", tiny_model, "--format", "gguf", "-o", "out/tiny.gguf", cwd=tmp_path, timeout=900)
    assert_one_line_error(proc, "converter cannot convert this model", "pre-tokenizer was not recognized",
                          "serve this one from the merged safetensors")
    assert list(tmp_path.iterdir()) == []


def test_a_template_ollama_cannot_take_is_named():
    """The tokenizer's own jinja template has a Go form only where it renders as a named template."""
    import pytest
    from transformers import AutoTokenizer

    from tuitune.errors import TuituneError
    from tuitune.export import modelfile, ollama_template
    from tuitune.sample import tiny_model_path

    tok = AutoTokenizer.from_pretrained(str(tiny_model_path()))
    go, named = ollama_template(tok, "chatml")
    assert named == "chatml" and "{{ .System }}" in go and "{{ .Content }}<|im_end|>\n" in go
    mf = modelfile("m.gguf", go, ["<|im_end|>"], "You are Tiny.")
    assert 'PARAMETER stop "<|im_end|>"' in mf and 'SYSTEM """You are Tiny."""' in mf
    tok.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(TuituneError, match="renders as none of the named templates"):
        ollama_template(tok, "auto")
    with pytest.raises(TuituneError, match="system prompt"):
        modelfile("m.gguf", go, [], 'say """hi"""')


# --- as a user types it: a workspace, relative paths (#20 item 1) -------------------------------------

SMOL_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.fixture(scope="module")
def mini_ws(real_model, tmp_path_factory):
    """A demo workspace with ``models/mini``: SmolLM2's tokenizer (one llama.cpp's converter knows)
    on a two-layer llama of random weights, so a conversion takes seconds; ``adapters/mini-lora``
    on it names its base by a relative path; ``tools/llama.cpp`` links to the converter."""
    import torch
    from merge_helpers import make_adapter
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tuitune.export import find_converter

    ws = tmp_path_factory.mktemp("mini") / "ws"
    proc = run_cli("demo", ws, "--no-open")
    assert proc.returncode == 0, proc.stderr
    cfg = AutoConfig.from_pretrained(real_model)
    cfg.update({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                "num_key_value_heads": 1, "head_dim": 16})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.generation_config = type(model.generation_config).from_pretrained(real_model)
    model.save_pretrained(ws / "models" / "mini")
    AutoTokenizer.from_pretrained(real_model).save_pretrained(ws / "models" / "mini")
    adapter = make_adapter(ws / "models" / "mini", ws / "adapters" / "mini-lora", r=2)
    acfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**acfg, "base_model_name_or_path": "models/mini"}))
    (ws / "tools").mkdir()
    (ws / "tools" / "llama.cpp").symlink_to(find_converter())
    return ws


def _gguf_tensors(path) -> int:
    import gguf

    return len(gguf.GGUFReader(str(path)).tensors)


@pytest.mark.slow
@pytest.mark.xdist_group("export-mini")   # one worker builds mini_ws once
def test_export_takes_paths_relative_to_the_folder_the_user_is_in(mini_ws):
    """`-o out/x.gguf`, `-o x.gguf` and `--llama-cpp tools/llama.cpp`, typed in the workspace: each
    is read from there (the converter runs in its own folder, so a path handed on as typed broke).
    The first is typed without --format: a .gguf output says it."""
    proc = run_cli("export", "models/mini", "-o", "out/mini.gguf", cwd=mini_ws, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _gguf_tensors(mini_ws / "out" / "mini.gguf") == 20
    assert f"wrote {mini_ws / 'out' / 'mini.gguf'}" in proc.stdout
    # An adapter whose base is a relative path, merged first; the output in the folder itself.
    proc = run_cli("export", "adapters/mini-lora", "--format", "gguf", "-o", "mini-merged.gguf", "--llama-cpp",
                   "tools/llama.cpp", cwd=mini_ws, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _gguf_tensors(mini_ws / "mini-merged.gguf") == 20
    assert not list(mini_ws.rglob("*.partial-*"))


@pytest.mark.slow
@pytest.mark.xdist_group("export-mini")   # one worker builds mini_ws once
def test_an_ollama_folder_carries_the_templates_default_system_prompt(mini_ws):
    """SmolLM2's template puts its own system prompt in when a conversation has none, and training
    used it (template auto, no data.system): the Modelfile's SYSTEM is that prompt (#20 item 5)."""
    proc = run_cli("export", "models/mini", "--format", "ollama", "-o", "ollama/mini", cwd=mini_ws, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = mini_ws / "ollama" / "mini"
    mf = (folder / "Modelfile").read_text()
    assert f'SYSTEM """{SMOL_DEFAULT}"""' in mf, mf
    assert _gguf_tensors(folder / "mini-f16.gguf") == 20
    assert f"ollama create mini -f {folder / 'Modelfile'}" in proc.stdout


# --- the format registry: a format is one module that declares itself (#21 item 5) -------------------

def _copy_model(job):
    """A throwaway format: the (merged) model folder as it is, the safetensors a vLLM server reads."""
    from tuitune.export import Written

    folder = job.tmp / "model"
    shutil.copytree(job.model_dir, folder)
    job.checks.append(f"{len(list(folder.glob('*.safetensors')))} safetensors file(s) copied")
    return Written(path=folder, command=f"vllm serve {job.out} --served-model-name {job.model_name}")


@pytest.fixture
def safetensors_format():
    """Registered from here, as a file beside gguf.py would be by discovery; nothing else is edited."""
    from tuitune.export import FORMATS, ExportFormat, register

    fmt = register(ExportFormat(name="safetensors", label="safetensors", kind="folder", output="{stem}-vllm",
                                description="the model's safetensors folder, for vllm serve", write=_copy_model,
                                gguf=False))
    yield fmt
    FORMATS.pop(fmt.name)


def test_the_shipped_formats_are_found_in_their_own_modules():
    """gguf.py and ollama.py each declare FORMAT; the package registers what it finds, gguf first."""
    from tuitune.export import DEFAULT_FORMAT, FORMATS, get_format
    from tuitune.errors import TuituneError

    assert list(FORMATS)[:2] == ["gguf", "ollama"] and DEFAULT_FORMAT == "gguf"
    assert {f.name: (f.write.__module__, f.kind) for f in FORMATS.values()} == {
        "gguf": ("tuitune.export.gguf", "file"), "ollama": ("tuitune.export.ollama", "folder")}
    assert FORMATS["gguf"].default_output("smol", "q8_0") == "smol-q8_0.gguf"
    assert FORMATS["ollama"].default_output("smol", "q8_0") == "smol-ollama"
    with pytest.raises(TuituneError, match="--format mlx: choose gguf or ollama"):
        get_format("mlx")


def test_without_format_the_outputs_name_says_it_or_the_error_asks_for_it(tmp_path):
    """`-o smol.gguf` is a GGUF; a folder or another ending asks for --format with the choices (exit 2,
    one line, nothing written)."""
    from tuitune.errors import TuituneError
    from tuitune.export import FORMATS, format_for_output

    assert format_for_output("out/Smol.GGUF").name == "gguf"
    assert {f.name: f.suffix for f in FORMATS.values()} == {"gguf": ".gguf", "ollama": ""}
    for out in ("ollama/smol", "smol.bin", ".gguf"):
        with pytest.raises(TuituneError, match=r"its name says no format; add --format gguf \(a \.gguf file\) "
                                               r"or ollama \(a folder\)"):
            format_for_output(out)
    proc = run_cli("export", "models/none", "-o", "smol", cwd=tmp_path)
    assert_one_line_error(proc, "-o smol: its name says no format", "--format gguf")
    assert list(tmp_path.iterdir()) == []


def test_a_third_format_is_one_declaration(safetensors_format, tiny_model, tmp_path, capsys):
    """The CLI's choices and help, the engine (merge first, publish, --force, no converter looked for
    since the format holds no GGUF) take a format registered from this module."""
    from merge_helpers import make_adapter

    from tuitune.cli import main

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert "--format {gguf,ollama,safetensors}" in helptext
    assert "safetensors: the model's safetensors folder, for vllm serve" in helptext
    assert "safetensors: a folder" in helptext

    adapter = make_adapter(tiny_model, tmp_path / "adapter", r=2)
    out = tmp_path / "served" / "tiny"
    args = ["export", str(adapter), "--format", "safetensors", "-o", str(out), "--llama-cpp", str(tmp_path / "no")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}:" in printed and "1 safetensors file(s) copied" in printed
    assert f"run it: vllm serve {out} --served-model-name tiny" in printed
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()   # merged, not the adapter
    assert not list(tmp_path.rglob("*.partial-*"))

    assert main(args) == 2 and "pass --force" in capsys.readouterr().err   # an existing output: refused
    assert main([*args, "--force", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["gguf"] is None and result["merged"] is True and result["out"] == str(out)
    assert [p.name.split(".replaced-")[0] for p in out.parent.iterdir()] == ["tiny", "tiny"]   # the old kept aside


async def test_the_merge_dialog_offers_a_registered_format(safetensors_format):
    """The Export dialog lists the registry; picking a format without a GGUF sets its default output
    and turns the GGUF's tensor type off."""
    from textual.app import App

    from screens.widgets.merge.export_panel import ExportModal

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(ExportModal("tiny", "tiny"))

    app = Host()
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        fmt, typ, out = (app.screen.query_one(f"#export-{w}") for w in ("format", "type", "out"))
        assert fmt.value == "gguf" and out.value == "models/tiny-f16.gguf" and not typ.disabled
        fmt.value = "safetensors"   # a value the Select does not offer raises InvalidSelectValueError
        await pilot.pause()
        assert out.value == "models/tiny-vllm" and typ.disabled
        fmt.value = "ollama"
        await pilot.pause()
        assert out.value == "models/tiny-ollama" and not typ.disabled
