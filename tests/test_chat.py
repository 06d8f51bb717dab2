"""The chat engine (tuitune.chat) on the real tiny model: streaming, seeds, stop, history, compare."""

from __future__ import annotations

import gc
import json
import threading
import weakref
from pathlib import Path

import pytest

from tuitune.chat import ChatSession, GenerationSettings, load_pair, save_conversations
from tuitune.errors import TuituneError
from tuitune.sources import resolve

QUESTION = "请介绍一下你自己"


def make_adapter(base: Path, out: Path, seed: int = 0, scale: float = 0.5) -> Path:
    """A LoRA adapter for ``base`` with perturbed lora_B (so it changes the answers), saved to ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    peft.save_pretrained(out)
    return out


def make_foreign_adapter(out: Path) -> Path:
    """An adapter trained on a differently shaped model: it does not fit the tiny model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=3000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    get_peft_model(Qwen2ForCausalLM(cfg), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(out)
    return out


def plain_greedy(model, tokenizer, question: str, max_new_tokens: int) -> str:
    import torch

    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                         tokenize=False)
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory) -> Path:
    return make_adapter(tiny_model, tmp_path_factory.mktemp("adapter") / "lora")


@pytest.fixture(scope="module")
def chat(tiny_model) -> ChatSession:
    return ChatSession(GenerationSettings(temperature=0, max_new_tokens=24)).load(str(tiny_model))


@pytest.fixture
def session(chat) -> ChatSession:
    chat.reset()
    chat.settings = GenerationSettings(temperature=0, max_new_tokens=24)
    chat.context_length = 2048
    return chat


def test_greedy_answer_is_model_generate(session):
    """temperature 0 is greedy: the same text plain model.generate gives."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    answer = session.ask(QUESTION)
    src = session.source.base
    expected = plain_greedy(AutoModelForCausalLM.from_pretrained(src), AutoTokenizer.from_pretrained(src),
                            QUESTION, 24)
    assert answer == expected
    assert session.last.stats.greedy and session.last.stats.new_tokens == 24


def test_stream_yields_pieces_and_stats(session):
    session.settings = GenerationSettings(temperature=1.0, seed=3, max_new_tokens=40)
    pieces = list(session.stream("What is LoRA?"))
    assert len(pieces) >= 1 and all(pieces)
    st = session.last.stats
    assert "".join(pieces) == session.last.text
    assert st.new_tokens == 40 and st.finish == "length"
    assert 0 < st.ttft <= st.seconds and st.tokens_per_s > 0 and st.prompt_tokens > 5
    assert "40 tokens" in st.line() and "tok/s" in st.line() and "seed 3" in st.line()
    assert "tok/s" not in st.line(timings=False)


def test_same_seed_same_answer_even_after_other_generations(session):
    session.settings = GenerationSettings(temperature=1.2, top_p=0.95, top_k=0, seed=7, max_new_tokens=30)
    first = session.ask(QUESTION)
    session.reset()
    session.settings = session.settings.replace(seed=8)
    other = session.ask(QUESTION)
    session.ask("and then?")  # more generations in between, and a different history
    session.reset()
    session.settings = session.settings.replace(seed=7)
    assert session.ask(QUESTION) == first
    assert other != first  # the seed matters


def test_random_seed_is_recorded_and_reproduces(session):
    session.settings = GenerationSettings(temperature=1.0, seed=None, max_new_tokens=20)
    a = session.ask(QUESTION)
    used = session.last.stats.seed
    assert isinstance(used, int)
    session.reset()
    session.settings = session.settings.replace(seed=used)
    assert session.ask(QUESTION) == a


def test_stop_request_ends_the_answer(session):
    session.settings = GenerationSettings(temperature=1.0, seed=1, max_new_tokens=2000)
    got = []
    for piece in session.stream("hello"):
        got.append(piece)
        session.stop()  # as a UI would, from another thread or right here
    st = session.last.stats
    assert st.finish == "stopped" and st.new_tokens < 2000
    assert session.history[-1] == {"role": "assistant", "content": "".join(got)}


def test_stop_from_another_thread(session):
    session.settings = GenerationSettings(temperature=1.0, seed=1, max_new_tokens=2000)
    first = threading.Event()
    threading.Timer(0.0, lambda: (first.wait(30), session.stop())).start()
    for _ in session.stream("hello"):
        first.set()
    assert session.last.stats.finish == "stopped"


def test_user_stop_words_cut_the_answer(session):
    session.settings = GenerationSettings(temperature=1.0, top_p=1.0, top_k=0, seed=5, max_new_tokens=40)
    full = session.ask(QUESTION)
    i = next(i for i in range(8, len(full) - 3)
             if all(not c.isspace() and c != "\ufffd" for c in full[i:i + 3]))
    word = full[i:i + 3]
    session.reset()
    session.settings = session.settings.replace(stop=(word,))
    cut = session.ask(QUESTION)
    assert cut == full[:full.index(word)]
    assert session.last.stats.finish == "stop_word"


def test_multi_turn_history_and_reset(session):
    session.settings = GenerationSettings(temperature=0, max_new_tokens=8, system="You are Alice.")
    session.ask("hi")
    session.ask("who are you?")
    assert [m["role"] for m in session.history] == ["user", "assistant", "user", "assistant"]
    msgs = session.messages("next")
    assert msgs[0] == {"role": "system", "content": "You are Alice."} and msgs[-1]["content"] == "next"
    session.reset()
    assert session.history == [] and session.last is None


def test_history_is_trimmed_from_the_oldest_turn(session):
    session.settings = GenerationSettings(temperature=0, max_new_tokens=16)
    session.context_length = 90
    notes = []
    for i in range(6):
        session.ask(f"question number {i} about the data")
        notes.append(session.last.stats)
    trimmed = [st for st in notes if st.trimmed_turns]
    assert trimmed, [st.prompt_tokens for st in notes]
    assert "dropped the oldest" in trimmed[0].note and "90 tokens" in trimmed[0].note
    assert all(st.prompt_tokens + 16 <= 90 for st in notes)
    # The newest turn is always kept; the oldest went first.
    assert session.history[-2]["content"] == "question number 5 about the data"
    assert session.history[0]["content"] != "question number 0 about the data"


def test_prompt_longer_than_the_context_is_an_error(session):
    session.context_length = 40
    with pytest.raises(TuituneError, match="context"):
        session.ask("word " * 100)


def test_save_transcript_in_the_data_format(session, tmp_path):
    from tuitune.data.io import load_records

    session.settings = GenerationSettings(temperature=1.0, top_k=0, top_p=1.0, seed=2, max_new_tokens=6,
                                          system="Be brief.")
    session.ask("hi")
    session.ask("again")
    assert session.history[1]["content"].strip() and session.history[3]["content"].strip()
    out = tmp_path / "t" / "chat.jsonl"
    session.save_transcript(out)
    session.save_transcript(out)  # appends
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[0])
    assert rec["conversation"][0]["system"] == "Be brief."
    assert [t["input"] for t in rec["conversation"]] == ["hi", "again"]
    assert rec["conversation"][1]["output"] == session.history[-1]["content"]
    assert len(load_records(out)) == 2  # tuitune's own reader takes it as training data
    session.reset()
    with pytest.raises(TuituneError, match="no answers"):
        save_conversations(tmp_path / "none.jsonl", [session])
    # A blank answer (the untrained tiny model's greedy one is newlines) is no training example.
    session.settings = GenerationSettings(temperature=0, max_new_tokens=4)
    session.ask("hi")
    assert not session.history[1]["content"].strip()
    assert session.conversation() == {"conversation": []}


@pytest.mark.parametrize("field,value,needle", [
    ("temperature", -0.1, "temperature"), ("top_p", 0, "top_p"), ("top_p", 1.5, "top_p"),
    ("top_k", -1, "top_k"), ("top_k", 2.5, "top_k"), ("repetition_penalty", 0, "repetition_penalty"),
    ("max_new_tokens", 0, "max_new_tokens"), ("seed", -1, "seed"), ("seed", "7", "seed"),
])
def test_settings_validation(field, value, needle):
    with pytest.raises(TuituneError, match=needle):
        GenerationSettings(**{field: value})


def test_settings_from_text():
    s = GenerationSettings()
    assert s.updated("temperature", "0").greedy
    assert s.updated("top-p", "0.5").top_p == 0.5
    assert s.updated("max_tokens", "9").max_new_tokens == 9
    assert s.updated("seed", "random").seed is None
    assert s.updated("stop", "User:, ###").stop == ("User:", "###")
    with pytest.raises(TuituneError, match="seed must be a whole number"):
        s.updated("seed", "1.5")
    with pytest.raises(TuituneError, match="unknown setting"):
        s.updated("warmth", "1")


def test_adapter_changes_the_answer(tiny_model, adapter, session):
    base_answer = session.ask(QUESTION)
    tuned = ChatSession(session.settings).load(str(tiny_model), adapter=str(adapter))
    assert tuned.source.adapter == adapter and "lora" in tuned.source.label
    assert tuned.ask(QUESTION) != base_answer


def test_adapter_folder_alone_finds_its_base(tiny_model, adapter):
    src = resolve(str(adapter))
    assert src.adapter == adapter and Path(src.base) == Path(tiny_model)


def test_compare_shares_one_base_and_matches_single_sessions(tiny_model, adapter, session):
    settings = GenerationSettings(temperature=0.9, seed=11, max_new_tokens=20)
    a, b = load_pair(resolve(str(tiny_model)), resolve(str(tiny_model), adapter=str(adapter)),
                     settings=settings)
    assert a.loaded is b.loaded  # the base is in memory once
    ans_b1 = b.ask(QUESTION)
    ans_a = a.ask(QUESTION)  # the base side, with the adapter switched off
    session.settings = settings
    assert ans_a == session.ask(QUESTION)
    tuned = ChatSession(settings).load(str(tiny_model), adapter=str(adapter))
    assert tuned.ask(QUESTION) == ans_b1
    assert ans_a != ans_b1


def test_compare_sides_answer_together_each_as_it_would_alone(tiny_model, adapter):
    """Issue 20 #8: the sides of a compare stream together (both have text before either ends),
    token by token in turn on the shared base, and each answer is the one its session gives alone
    with the same seed. A stop ends both where they are: each keeps its text, finish "stopped"."""
    from tuitune.chat import Together

    settings = GenerationSettings(temperature=0.9, seed=11, max_new_tokens=20)
    a, b = load_pair(resolve(str(tiny_model)), resolve(str(tiny_model), adapter=str(adapter)), settings=settings)
    events = list(Together([a, b], QUESTION))
    first_end = next(i for i, e in enumerate(events) if e.done)
    assert {e.side for e in events[:first_end] if e.text} == {0, 1}, [(e.side, e.done) for e in events]
    got = {e.side: e.answer.text for e in events if e.done}
    assert got == {0: a.last.text, 1: b.last.text}
    alone_a, alone_b = a.last.text, b.last.text
    a.reset(), b.reset()
    assert (a.ask(QUESTION), b.ask(QUESTION)) == (alone_a, alone_b)
    assert alone_a != alone_b

    # A stop asked from another thread mid-answer ends both sides; their text so far stays.
    for s in (a, b):
        s.reset()
        s.settings = GenerationSettings(temperature=0, max_new_tokens=100000)
    together = Together([a, b], QUESTION)
    seen: dict[int, str] = {0: "", 1: ""}
    ends = {}
    stopper = threading.Thread(target=together.stop)
    for e in together:
        seen[e.side] += e.text
        if all(seen.values()) and not stopper.is_alive() and stopper.ident is None:
            stopper.start()
        if e.done:
            ends[e.side] = e.answer
    assert set(ends) == {0, 1}
    for side, ans in ends.items():
        assert ans.stats.finish == "stopped" and ans.text == seen[side] and ans.text


def test_one_side_failing_leaves_the_other_answering(tiny_model, adapter):
    """A side that fails before its first token (its prompt does not fit) does not hold the other up."""
    from tuitune.chat import Together

    settings = GenerationSettings(temperature=0, max_new_tokens=8)
    a, b = load_pair(resolve(str(tiny_model)), resolve(str(tiny_model), adapter=str(adapter)), settings=settings)
    b.context_length = 4
    ends = {e.side: e for e in Together([a, b], QUESTION) if e.done}
    assert ends[0].answer.text and ends[0].answer.stats.finish in ("eos", "length")
    assert ends[1].answer is None and "context" in ends[1].error


def test_loading_another_model_frees_the_previous(tiny_model):
    s = ChatSession(GenerationSettings(temperature=0, max_new_tokens=4)).load(str(tiny_model))
    ref = weakref.ref(s.loaded.model)
    s.load(str(tiny_model))
    gc.collect()
    assert ref() is None
    s.unload()
    assert not s.is_loaded
    with pytest.raises(TuituneError, match="no model loaded"):
        s.ask("hi")


def test_adapter_that_does_not_fit(tiny_model, tmp_path):
    bad = make_foreign_adapter(tmp_path / "foreign")
    with pytest.raises(TuituneError, match="does not fit") as err:
        ChatSession().load(str(tiny_model), adapter=str(bad))
    assert "size mismatch" in str(err.value)


def test_not_a_model_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(TuituneError, match="not a model folder"):
        resolve(str(tmp_path))
    with pytest.raises(TuituneError, match="no such folder"):
        resolve(str(tmp_path / "missing"), tmp_path)


def test_bits_need_a_gpu(tiny_model):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(TuituneError, match="needs a CUDA GPU"):
        ChatSession().load(str(tiny_model), bits=4)


def no_template_model(tiny_model: Path, out: Path) -> Path:
    import shutil

    shutil.copytree(tiny_model, out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    return out


def test_model_without_chat_template(tiny_model, tmp_path):
    plain = no_template_model(tiny_model, tmp_path / "plain")
    with pytest.raises(TuituneError, match="no chat template; choose a named template"):
        ChatSession().load(str(plain))
    s = ChatSession(GenerationSettings(temperature=0, max_new_tokens=5)).load(str(plain), template="chatml")
    assert s.template == "chatml" and s.last is None
    s.ask("hi")
    assert s.last.stats.new_tokens <= 5
    assert s.set_template("qwen_chat") == "qwen_chat"
    with pytest.raises(TuituneError, match="no chat template"):
        s.set_template(None)  # back to auto: this model has none
    with pytest.raises(TuituneError, match="unknown template 'nope'"):
        s.set_template("nope")
