"""labkit.clients on responses and errors recorded from the real llama-server (data/clients/)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion

from labkit import sse
from labkit.clients import context_overflow, server_extras

DATA = Path(__file__).resolve().parent.parent / "data" / "clients"


def test_server_extras_on_typed_response():
    body = (DATA / "llamacpp_stream_include_usage.sse").read_bytes()
    usage_chunk = list(sse.iter_chunks(sse.iter_events([body])))[-1]
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
