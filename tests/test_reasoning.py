"""labkit.reasoning on recorded real streams (data/streams/reasoning/) and on any chunking (hypothesis)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.reasoning import (Split, ThinkSplitter, collect, iter_split, reasoning_field, split_message,
                              split_think, to_html)
from labkit.sse import iter_chunks, iter_events, iter_ndjson

DATA = Path(__file__).resolve().parent.parent / "data" / "streams" / "reasoning"


def chunks(name: str) -> list[dict]:
    return list(iter_chunks(iter_events([(DATA / name).read_bytes()])))


def contents(name: str) -> list[str]:
    """The `delta.content` pieces exactly as llama-server streamed them."""
    return [c["choices"][0]["delta"].get("content") or "" for c in chunks(name) if c.get("choices")]


def message(name: str) -> dict:
    return json.loads((DATA / name).read_text())["choices"][0]["message"]


# --- whole texts -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("<think>\n\n</think>\n\n你好！", Split("\n\n", "\n\n你好！", True)),           # the seed's empty thoughts
    ("<think>a</think>b", Split("a", "b", True)),
    ("  \n<think>a</think>b", Split("a", "b", True)),                                  # whitespace before the tag
    ("<think>still thinking", Split("still thinking", "", False)),                     # never closed (cut off)
    ("<think>a</think>b</think>c", Split("a", "b</think>c", True)),                    # only the first close counts
    ("plain answer", Split("", "plain answer", True)),
    ("<thinking>x</thinking>", Split("", "<thinking>x</thinking>", True)),            # looks like a tag, is not
    ("2 < 3 and <think> later", Split("", "2 < 3 and <think> later", True)),          # a tag mid-answer is text
    ("<th", Split("", "<th", True)),
    ("", Split("", "", True)),
])
def test_split_think_cases(text, expected):
    assert split_think(text) == expected
    assert ThinkSplitter().split(text) == expected  # one character at a time


def test_prefilled_template_has_no_opening_tag():
    text = "the user greets me\n</think>\n\n你好"
    assert split_think(text, prefilled=True) == Split("the user greets me\n", "\n\n你好", True)
    assert split_think(text, prefilled=None) == Split("the user greets me\n", "\n\n你好", True)  # guessed
    assert split_think(text) == Split("", text, True)  # without being told, it is all answer
    assert ThinkSplitter(prefilled=True).split(text) == split_think(text, prefilled=True)
    assert split_think("no close at all", prefilled=True) == Split("no close at all", "", False)


# --- recorded real streams ---------------------------------------------------------------------------------

def test_tags_arrive_split_across_chunks_in_the_real_stream():
    pieces = contents("llamacpp_none.sse")
    assert "<think>" not in pieces and pieces[1:6] == ["<", "t", "h", "ink", ">"]
    whole = "".join(pieces)
    assert ThinkSplitter().split(pieces) == split_think(whole)
    assert split_think(whole).reasoning == "\n2 + 2 = 4\n"


def test_our_split_of_none_equals_llama_servers_own_split():
    """reasoning_format none (raw tags) split by us == reasoning_format deepseek split by llama-server."""
    ours = split_think("".join(contents("llamacpp_none.sse")))
    theirs = collect(iter_split(chunks("llamacpp_deepseek.sse")))
    assert (ours.reasoning, ours.answer) == (theirs.reasoning, theirs.answer)
    assert split_message(message("llamacpp_none_message.json")) == split_message(
        message("llamacpp_deepseek_message.json"))


def test_deepseek_legacy_in_this_build_streams_like_deepseek():
    deltas = [c["choices"][0]["delta"] for c in chunks("llamacpp_legacy.sse") if c.get("choices")]
    assert any("reasoning_content" in d for d in deltas)
    assert "<think>" not in "".join(d.get("content") or "" for d in deltas)


def test_chinese_stream_splits_with_utf8_intact():
    split = ThinkSplitter().split(contents("llamacpp_zh_none.sse"))
    assert split.closed and split.reasoning.startswith("\n你好") and split.answer.startswith("\n\n")


def test_stop_at_close_tag_loses_the_answer():
    split = ThinkSplitter().split(contents("llamacpp_stop_think.sse"))
    assert split == Split("\n2 + 2 = 4\n", "", False)  # thoughts kept, answer never generated
    assert chunks("llamacpp_stop_think.sse")[-1]["choices"][0]["finish_reason"] == "stop"


def test_enable_thinking_false_gives_plain_content():
    split = collect(iter_split(chunks("llamacpp_nothink.sse")))
    assert split.reasoning == "" and split.answer.strip() == "2 + 2 = 4"


def test_ollama_plain_stream_has_no_reasoning():
    split = collect(iter_split(chunks("ollama_v1_plain.sse")))
    assert split.reasoning == "" and split.answer.startswith("The answer")
    lines = list(iter_ndjson([(DATA / "ollama_native_nothink.ndjson").read_bytes()]))
    assert all("thinking" not in line["message"] for line in lines)


def test_ollama_refuses_think_for_a_model_without_thinking():
    assert json.loads((DATA / "ollama_native_think_true.ndjson").read_text()) == {
        "error": '"smollm2-135m" does not support thinking'}
    v1 = json.loads((DATA / "ollama_v1_reasoning_effort.sse").read_text())
    assert v1["error"]["type"] == "invalid_request_error"


# --- server fields ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("msg, field", [
    ({"content": "4", "reasoning_content": "add"}, "reasoning_content"),  # llama-server, DeepSeek API
    ({"content": "4", "reasoning": "add"}, "reasoning"),                  # Ollama /v1, vLLM
    ({"role": "assistant", "content": "4", "thinking": "add"}, "thinking"),  # Ollama /api/chat
])
def test_reads_each_servers_field(msg, field):
    assert reasoning_field(msg) == (field, "add")
    assert split_message(msg) == Split("add", "4", True)


def test_reads_openai_objects_model_extra():
    from openai.types.chat import ChatCompletion
    completion = ChatCompletion.model_validate(json.loads((DATA / "llamacpp_deepseek_message.json").read_text()))
    msg = completion.choices[0].message
    assert msg.model_extra["reasoning_content"] == "\n2 + 2 = 4\n"
    assert split_message(msg).reasoning == "\n2 + 2 = 4\n"


def test_iter_split_reads_ollama_native_lines():
    lines = [{"message": {"role": "assistant", "content": "", "thinking": "hm"}, "done": False},
             {"message": {"role": "assistant", "content": "4"}, "done": True}]
    assert list(iter_split(lines)) == [("reasoning", "hm"), ("answer", "4")]


def test_html_collapses_thoughts_and_escapes():
    out = to_html(Split("<b>x</b>", "a & b"))
    assert out.startswith("<details><summary>") and "&lt;b&gt;" in out and "a &amp; b" in out


# --- any chunking gives the whole-text split ---------------------------------------------------------------

RECORDED = ["".join(contents(n)) for n in ("llamacpp_none.sse", "llamacpp_zh_none.sse", "llamacpp_stop_think.sse",
                                           "llamacpp_nothink.sse")]
ALPHABET = st.sampled_from(["<think>", "</think>", "<", ">", "/", "t", "h", "ink", "<th", "</th", " ", "\n", "你",
                            "a", "😊"])
TEXTS = st.one_of(st.sampled_from(RECORDED), st.lists(ALPHABET, max_size=30).map("".join), st.text(max_size=40))


def cut(text: str, points: list[int]) -> list[str]:
    edges = sorted({0, len(text), *(p % (len(text) + 1) for p in points)})
    return [text[a:b] for a, b in zip(edges, edges[1:])]


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
       prefilled=st.booleans())
def test_any_chunking_gives_the_whole_text_split(text, points, prefilled):
    pieces = cut(text, points)
    assert "".join(pieces) == text
    assert ThinkSplitter(prefilled=prefilled).split(pieces) == split_think(text, prefilled=prefilled)


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_nothing_is_lost_or_invented(text, points):
    split = ThinkSplitter().split(cut(text, points))
    rebuilt = split.answer if split.reasoning == "" and not text.lstrip().startswith("<think>") else None
    if rebuilt is not None:
        assert rebuilt == text
    else:
        head = text[:len(text) - len(text.lstrip())]
        assert text == head + "<think>" + split.reasoning + ("</think>" if split.closed else "") + split.answer
