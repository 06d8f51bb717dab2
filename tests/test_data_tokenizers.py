"""Tokenizers for the template tests: the tiny model's, and variants with the special
tokens and public chat templates of Qwen2.5 and Llama 3 (never downloaded)."""

from __future__ import annotations

# Qwen2.5-Instruct's chat template (tokenizer_config.json), as published.
QWEN25_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# Meta-Llama-3-8B-Instruct's chat template, as published.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]


def tiny_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def variant(path, bos: str | None, eos: str, extra: list[str], chat_template: str | None):
    """A fast tokenizer on the tiny model's vocabulary with other special tokens (not a Qwen class)."""
    from transformers import PreTrainedTokenizerFast

    base = tiny_tokenizer(path)
    tok = PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer, bos_token=bos, eos_token=eos,
                                  pad_token="<|endoftext|>", additional_special_tokens=extra,
                                  clean_up_tokenization_spaces=False)
    tok.chat_template = chat_template
    return tok


def qwen25_tokenizer(path):
    tok = tiny_tokenizer(path)
    tok.chat_template = QWEN25_TEMPLATE
    return tok


def llama3_tokenizer(path):
    return variant(path, "<|begin_of_text|>", "<|eot_id|>", LLAMA3_SPECIALS[2:], LLAMA3_TEMPLATE)


def llama2_tokenizer(path):
    return variant(path, "<s>", "</s>", [], None)


def test_variants_carry_the_special_tokens(tiny_model):
    """The stand-ins really tokenize Llama-3's markers as single special tokens."""
    tok = llama3_tokenizer(tiny_model)
    ids = tok.encode("<|start_header_id|>user<|end_header_id|><|eot_id|>", add_special_tokens=False)
    assert tok.convert_ids_to_tokens([ids[0], ids[-2], ids[-1]]) == ["<|start_header_id|>", "<|end_header_id|>",
                                                                      "<|eot_id|>"]
    assert tok.bos_token == "<|begin_of_text|>" and tok.eos_token == "<|eot_id|>"
    assert "You are Qwen" in qwen25_tokenizer(tiny_model).apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False)
