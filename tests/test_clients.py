"""labkit.clients on streams and errors recorded from the real llama-server (data/clients/)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from labkit.clients import collect_stream, context_overflow, server_extras, sse_data_lines

DATA = Path(__file__).resolve().parent.parent / "data" / "clients"


def recorded_stream() -> list[dict]:
    return sse_data_lines((DATA / "llamacpp_stream_include_usage.sse").read_text(encoding="utf-8"))


def test_collect_stream_dicts_gets_text_finish_and_usage():
    events = recorded_stream()
    result = collect_stream(events)
    assert result.chunks == len(events)
    assert result.role == "assistant"
    assert result.finish_reason == "length"
    assert result.usage["completion_tokens"] == 6
    assert result.usage["total_tokens"] == result.usage["prompt_tokens"] + 6
    assert result.text and result.content_chunks <= 6
    assert "timings" in result.extras  # llama-server's extra field rides on the usage chunk


def test_collect_stream_typed_chunks_same_as_dicts():
    events = recorded_stream()
    typed = [ChatCompletionChunk.model_validate(e) for e in events]
    assert collect_stream(typed) == collect_stream(events)


def test_usage_chunk_has_no_choices():
    last = recorded_stream()[-1]
    assert last["choices"] == [] and last["usage"]


def test_stream_without_usage_chunk():
    events = [e for e in recorded_stream() if not e.get("usage")]
    result = collect_stream(events)
    assert result.usage is None and result.finish_reason == "length"


def test_reasoning_fields_of_both_servers():
    chunks = [{"choices": [{"index": 0, "delta": {"reasoning_content": "a"}}]},
              {"choices": [{"index": 0, "delta": {"reasoning": "b"}}]},
              {"choices": [{"index": 0, "delta": {"content": "c"}, "finish_reason": "stop"}]}]
    result = collect_stream(chunks)
    assert (result.reasoning, result.text, result.finish_reason) == ("ab", "c", "stop")


def test_server_extras_on_typed_response():
    usage_chunk = recorded_stream()[-1]
    completion = ChatCompletion.model_validate({**usage_chunk, "object": "chat.completion", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}]})
    extras = server_extras(completion)
    assert set(extras) == {"timings"}
    assert extras["timings"]["predicted_n"] == usage_chunk["usage"]["completion_tokens"]


def test_context_overflow_from_recorded_400():
    body = json.loads((DATA / "llamacpp_context_400.json").read_text())
    n_prompt, n_ctx = context_overflow(body)
    assert n_prompt > n_ctx == 1024
    assert context_overflow(body["error"]) == (n_prompt, n_ctx)
    assert context_overflow(body["error"]["message"]) == (n_prompt, n_ctx)


def test_context_overflow_none_for_other_errors():
    assert context_overflow({"error": {"code": 401, "message": "Invalid API Key"}}) is None


def test_as_dict_rejects_other_types():
    with pytest.raises(TypeError):
        server_extras(42)
