"""encode_conversation and pack: golden layouts, masking, truncation, pretraining, packing."""

from __future__ import annotations

import random

import pytest

from tests.test_data_tokenizers import llama2_tokenizer, llama3_tokenizer, tiny_tokenizer
from tuitune.encode import IGNORE_INDEX, encode_conversation, pack, pack_bins, token_spans

TWO_TURNS = {"conversation": [
    {"system": "You are a doctor.", "input": "What is the dose?", "output": "Take 5 mg."},
    {"input": "And for children?", "output": "Ask the doctor."},
]}


def _layout(tok, pieces):
    """Expected ids and labels from (text or [ids], trained) pieces, each tokenized on its own."""
    ids, labels = [], []
    for piece, trained in pieces:
        p = piece if isinstance(piece, list) else tok.encode(piece, add_special_tokens=False)
        ids += p
        labels += p if trained else [IGNORE_INDEX] * len(p)
    return ids, labels


GOLDEN = {
    "qwen_chat": (tiny_tokenizer, lambda t: [
        ("<|im_start|>system\nYou are a doctor.<|im_end|>\n<|im_start|>user\nWhat is the dose?<|im_end|>\n"
         "<|im_start|>assistant\n", False),
        ("Take 5 mg.<|im_end|>", True),
        ("\n", False),
        ("<|im_start|>user\nAnd for children?<|im_end|>\n<|im_start|>assistant\n", False),
        ("Ask the doctor.<|im_end|>", True),
        ("\n", False),
    ]),
    "llama3_chat": (llama3_tokenizer, lambda t: [
        ([t.convert_tokens_to_ids("<|begin_of_text|>")], False),
        ("<|start_header_id|>system<|end_header_id|>\n\nYou are a doctor.<|eot_id|>"
         "<|start_header_id|>user<|end_header_id|>\n\nWhat is the dose?<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n", False),
        ("Take 5 mg.<|eot_id|>", True),
        ("<|start_header_id|>user<|end_header_id|>\n\nAnd for children?<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n", False),
        ("Ask the doctor.<|eot_id|>", True),
    ]),
    "llama2_chat": (llama2_tokenizer, lambda t: [
        ([t.convert_tokens_to_ids("<s>")], False),
        ("[INST] <<SYS>>\n You are a helpful, respectful and honest assistant. Always answer as helpfully as "
         "possible, while being safe. Your answers should not include any harmful, unethical, racist, sexist, "
         "toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased and "
         "positive in nature.\nYou are a doctor.\n<</SYS>>\n [/INST] [INST] What is the dose? [/INST]", False),
        ("Take 5 mg.", True),
        ([t.convert_tokens_to_ids("</s>")], True),
        ("\n", False),
        ([t.convert_tokens_to_ids("<s>")], False),
        ("[INST] And for children? [/INST]", False),
        ("Ask the doctor.", True),
        ([t.convert_tokens_to_ids("</s>")], True),
        ("\n", False),
    ]),
    "default": (tiny_tokenizer, lambda t: [
        ("<|System|>:You are a doctor.\n<|User|>:What is the dose?\n<|Bot|>:", False),
        ("Take 5 mg.", True),
        ([t.convert_tokens_to_ids("<|im_end|>")], True),
        ("\n", False),
        ("<|User|>:And for children?\n<|Bot|>:", False),
        ("Ask the doctor.", True),
        ([t.convert_tokens_to_ids("<|im_end|>")], True),
        ("\n", False),
    ]),
}


@pytest.mark.parametrize("template", list(GOLDEN))
def test_golden_two_turn_layout(tiny_model, template):
    make, pieces = GOLDEN[template]
    tok = make(tiny_model)
    enc = encode_conversation(tok, TWO_TURNS, template, max_length=4096)
    ids, labels = _layout(tok, pieces(tok))
    assert enc["input_ids"] == ids
    assert enc["labels"] == labels
    trained_text = [text for text, trained in token_spans(tok, enc["input_ids"], enc["labels"]) if trained]
    assert [t.replace(tok.eos_token, "") for t in trained_text] == ["Take 5 mg.", "Ask the doctor."]


def test_golden_qwen_chat_ids_on_the_tiny_model(tiny_model):
    """The literal token ids, so a change in tokenization or masking shows up as a diff."""
    tok = tiny_tokenizer(tiny_model)
    rec = {"conversation": [{"input": "hi", "output": "ok"}, {"input": "hi", "output": "ok"}]}
    enc = encode_conversation(tok, rec, "qwen_chat", max_length=100)
    im_start, im_end, nl = 1, 2, 201
    user = tok.encode("user\nhi", add_special_tokens=False)
    asst = tok.encode("assistant\n", add_special_tokens=False)
    ok = tok.encode("ok", add_special_tokens=False)
    turn = [im_start, *user, im_end, nl, im_start, *asst]
    assert enc["input_ids"] == turn + ok + [im_end, nl] + turn + ok + [im_end, nl]
    m = [IGNORE_INDEX]
    assert enc["labels"] == m * len(turn) + ok + [im_end] + m + m * len(turn) + ok + [im_end] + m


def test_auto_equals_qwen_chat_on_a_chatml_model(tiny_model):
    tok = tiny_tokenizer(tiny_model)
    assert encode_conversation(tok, TWO_TURNS, "auto", 4096) == encode_conversation(tok, TWO_TURNS, "qwen_chat", 4096)


def test_auto_llama3_labels_only_answers_and_eot(tiny_model):
    tok = llama3_tokenizer(tiny_model)
    enc = encode_conversation(tok, TWO_TURNS, "auto", 4096)
    assert enc == encode_conversation(tok, TWO_TURNS, "llama3_chat", 4096)


def test_truncation_and_system_only_on_first_turn(tiny_model):
    tok = tiny_tokenizer(tiny_model)
    full = encode_conversation(tok, TWO_TURNS, "qwen_chat", 4096)
    cut = encode_conversation(tok, TWO_TURNS, "qwen_chat", 10)
    assert cut["input_ids"] == full["input_ids"][:10] and cut["labels"] == full["labels"][:10]
    text = tok.decode(full["input_ids"])
    assert text.count("You are a doctor.") == 1 and text.index("You are a doctor.") < text.index("What is the dose?")


def test_pretraining_trains_every_token(tiny_model):
    tok = tiny_tokenizer(tiny_model)
    enc = encode_conversation(tok, {"conversation": [{"input": "", "output": "plain text here"}]}, "qwen_chat",
                              100, task="pretrain")
    assert enc["labels"] == enc["input_ids"]
    assert enc["input_ids"][-1] == tok.eos_token_id
    assert tok.decode(enc["input_ids"][:-1]) == "plain text here"


def test_pack_concatenates_with_per_sample_positions():
    samples = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]},
               {"input_ids": [6, 7, 8, 9], "labels": [-100, -100, 8, 9]},
               {"input_ids": list(range(10, 20)), "labels": list(range(10, 20))}]
    packed = list(pack(samples, max_length=6))
    # Best fit decreasing: the 2-token sample fills the row that the 4-token one left 2 free.
    assert [p["input_ids"] for p in packed] == [[10, 11, 12, 13, 14, 15], [6, 7, 8, 9, 4, 5], [1, 2, 3]]
    assert packed[1]["position_ids"] == [0, 1, 2, 3, 0, 1]
    # The first token of each sample is never a target of the previous sample.
    assert packed[1]["labels"] == [-100, -100, 8, 9, -100, 5]
    assert all(len(p["input_ids"]) == len(p["labels"]) == len(p["position_ids"]) <= 6 for p in packed)


def test_pack_bins_fill_rows_where_data_order_would_not():
    # In data order 300, 300, 200, 200 fills four rows of 512 half-empty; best fit needs two.
    bins = pack_bins([300, 300, 200, 200], 512)
    assert len(bins) == 2 and all(sorted(b)[0] in (0, 1) and sorted(b)[1] in (2, 3) for b in bins)
    rng = random.Random(0)
    lengths = [min(512, int(rng.lognormvariate(4.5, 0.8))) for _ in range(5000)]
    bins = pack_bins(lengths, 512)
    assert sorted(i for b in bins for i in b) == list(range(5000))  # every sample, once
    assert all(sum(lengths[i] for i in b) <= 512 for b in bins)
    assert sum(lengths) / (512 * len(bins)) > 0.98


def test_pack_real_encodings_keeps_all_trained_tokens(tiny_model):
    tok = tiny_tokenizer(tiny_model)
    encs = [encode_conversation(tok, TWO_TURNS, "qwen_chat", 256) for _ in range(5)]
    packed = list(pack(encs, max_length=len(encs[0]["input_ids"]) * 2 + 1))
    assert len(packed) == 3
    trained = sum(l != IGNORE_INDEX for p in packed for l in p["labels"])
    assert trained == sum(l != IGNORE_INDEX for e in encs for l in e["labels"])


def test_encode_inside_datasets_map(tiny_model):
    """The Train step calls encode_conversation from datasets.map."""
    from datasets import Dataset

    tok = tiny_tokenizer(tiny_model)
    ds = Dataset.from_list([TWO_TURNS, {"conversation": [{"input": "hi", "output": "ok"}]}])
    enc = ds.map(lambda r: encode_conversation(tok, r, "qwen_chat", 64), remove_columns=["conversation"])
    assert enc[1]["labels"][-2:] == [tok.convert_tokens_to_ids("<|im_end|>"), IGNORE_INDEX]
    assert all(len(r["input_ids"]) == len(r["labels"]) <= 64 for r in enc)


def test_arrow_style_none_fields_are_absent_fields(tiny_model):
    """datasets fills missing struct keys with None: that must encode as if the key were absent."""
    tok = tiny_tokenizer(tiny_model)
    with_none = {"conversation": [{"system": None, "input": "hi", "output": "ok"},
                                  {"system": None, "input": "again", "output": "ok2"}]}
    plain = {"conversation": [{"input": "hi", "output": "ok"}, {"input": "again", "output": "ok2"}]}
    for template in ("qwen_chat", "auto", "default"):
        assert encode_conversation(tok, with_none, template, 128) == encode_conversation(tok, plain, template, 128)
