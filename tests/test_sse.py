"""labkit.sse on recorded real streams (data/streams/), re-fed split at every byte boundary.

The recorded files are exact response bodies from llama-server and Ollama (see each *.request.json). Small
inline byte strings below cover what those servers did not send while recording (comments, CR line ends,
`event: error`); they are labelled as such."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit import sse

STREAMS = Path(__file__).resolve().parent.parent / "data" / "streams"
SSE_FILES = sorted(p for p in STREAMS.glob("*.sse"))
NDJSON_FILES = sorted(STREAMS.glob("*.ndjson"))


def read(path: Path) -> bytes:
    return path.read_bytes()


def reassemble(chunks) -> sse.Assembled:
    return sse.assemble(sse.iter_chunks(sse.iter_events(chunks)))


def split_at(body: bytes, cuts) -> list[bytes]:
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    return [body[a:b] for a, b in zip(points, points[1:])]


def test_recordings_exist():
    names = {p.name for p in SSE_FILES}
    assert "llamacpp_chat_zh.sse" in names and "llamacpp_chat_en.sse" in names


@pytest.mark.parametrize("path", SSE_FILES, ids=lambda p: p.name)
def test_recorded_stream_reassembles(path):
    meta = json.loads(path.with_suffix(".request.json").read_text())
    total = reassemble([read(path)])
    assert total.finish_reason in {"stop", "length", "tool_calls"}
    assert (total.text or total.tool_calls) and total.n_deltas >= 1 and total.id
    if meta["request"].get("stream_options", {}).get("include_usage"):
        assert total.usage["completion_tokens"] == meta["request"]["max_tokens"] or total.finish_reason == "stop"
        assert total.usage["total_tokens"] == total.usage["prompt_tokens"] + total.usage["completion_tokens"]


def test_chinese_recording_has_multibyte_text():
    total = reassemble([read(STREAMS / "llamacpp_chat_zh.sse")])
    assert total.text.startswith("你好")
    # 10 tokens produced only 5 characters: a CJK character spans several byte-level tokens
    assert total.usage["completion_tokens"] > total.n_deltas


@pytest.mark.parametrize("path", SSE_FILES, ids=lambda p: p.name)
def test_every_single_split_point_gives_the_same_result(path):
    body = read(path)
    whole = reassemble([body])
    for i in range(len(body) + 1):
        assert reassemble([body[:i], body[i:]]) == whole, f"split at byte {i}"


@pytest.mark.parametrize("path", SSE_FILES, ids=lambda p: p.name)
def test_byte_by_byte(path):
    body = read(path)
    assert reassemble(body[i:i + 1] for i in range(len(body))) == reassemble([body])


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_splits_hypothesis(data):
    path = data.draw(st.sampled_from(SSE_FILES))
    body = read(path)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(body)), max_size=40))
    assert reassemble(split_at(body, cuts)) == reassemble([body])


@pytest.mark.parametrize("path", SSE_FILES, ids=lambda p: p.name)
def test_every_truncation_raises(path):
    """A cut stream never passes as complete: every proper prefix that lacks `data: [DONE]` raises SSEError."""
    body = read(path)
    done_at = body.rindex(b"data: [DONE]") + len(b"data: [DONE]\n")
    for i in range(done_at):
        with pytest.raises(sse.SSEError):
            reassemble([body[:i]])
    for i in range(done_at, len(body) + 1):  # [DONE] line complete: only the final blank line may be missing
        assert reassemble([body[:i]]) == reassemble([body])


def test_truncated_inside_a_character_says_so():
    body = read(STREAMS / "llamacpp_chat_zh.sse")
    cut = body.index("你".encode()) + 1
    with pytest.raises(sse.SSEError, match="multi-byte UTF-8"):
        list(sse.iter_events([body[:cut]]))


def test_naive_per_chunk_decoding_breaks_chinese():
    """What the lesson shows: bytes.decode() per network chunk fails when a chunk ends inside a character."""
    body = read(STREAMS / "llamacpp_chat_zh.sse")
    cut = body.index("你".encode()) + 1
    with pytest.raises(UnicodeDecodeError):
        body[:cut].decode("utf-8")
    assert reassemble([body[:cut], body[cut:]]).text.startswith("你好")


def test_garbled_bytes_raise():
    body = read(STREAMS / "llamacpp_chat_en.sse")
    garbled = body[:100] + b"\xff\xfe" + body[100:]
    with pytest.raises(sse.SSEError, match="not valid UTF-8 near byte 100"):
        reassemble([garbled])


def test_garbled_json_raises():
    body = read(STREAMS / "llamacpp_chat_en.sse").replace(b'"choices"', b'"choices', 1)
    with pytest.raises(sse.SSEError, match="not JSON"):
        reassemble([body])


def test_data_after_done_raises():
    body = read(STREAMS / "llamacpp_chat_en.sse") + b'data: {"late": true}\n\n'
    with pytest.raises(sse.SSEError, match="after \\[DONE\\]"):
        reassemble([body])


# --- features the recorded servers did not use; inline, spec-shaped examples ---------------------------------

def test_multiline_data_comments_id_retry_crlf():
    raw = (b": keep-alive ping\r\n\r\nid: 7\r\nretry: 1500\r\nevent: note\r\ndata: line one\r\ndata:line two\r\n\r\n"
           b"data\r\n\r\n")
    for i in range(len(raw) + 1):
        dec = sse.SSEDecoder()
        events = dec.feed(raw[:i]) + dec.feed(raw[i:]) + dec.close()
        assert events == [sse.Event("line one\nline two", "note", "7", 1500), sse.Event("", "message", "7", 1500)]
        assert dec.comments == ["keep-alive ping"]


def test_bare_cr_line_ends_and_bom():
    raw = "\ufeffdata: a\r\rdata: b\r\r".encode()
    for i in range(len(raw) + 1):
        assert [e.data for e in sse.iter_events([raw[:i], raw[i:]])] == ["a", "b"]


def test_event_error_raises_stream_error():
    raw = b'event: error\ndata: {"error": {"message": "boom", "code": 500}}\n\n'
    with pytest.raises(sse.StreamError, match="boom") as info:
        reassemble([raw])
    assert info.value.error == {"error": {"message": "boom", "code": 500}}


def test_llamacpp_2025_error_field_and_data_error_object():
    old = b'error: {"code":400,"message":"the request exceeds the available context size"}\n\ndata: [DONE]\n\n'
    with pytest.raises(sse.StreamError, match="exceeds the available context"):
        reassemble([old])
    new = b'data: {"error":{"code":500,"message":"slot died","type":"server_error"}}\n\n'
    with pytest.raises(sse.StreamError, match="slot died") as info:
        reassemble([new])
    assert info.value.error["type"] == "server_error"


def test_missing_done_is_an_error_unless_told_otherwise():
    raw = b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}\n\n'
    with pytest.raises(sse.SSEError, match="without `data: \\[DONE\\]`"):
        reassemble([raw])
    assert sse.assemble(sse.iter_chunks(sse.iter_events([raw]), require_done=False)).text == "x"


def test_recorded_http_error_body_is_not_a_stream():
    """llama-server answers a too-long streamed request with a plain JSON 400, not with SSE."""
    meta = json.loads((STREAMS / "llamacpp_error_ctx.request.json").read_text())
    assert meta["status"] == 400 and meta["content_type"].startswith("application/json")
    error = json.loads(read(STREAMS / "llamacpp_error_ctx.json"))["error"]
    assert error["type"] == "exceed_context_size_error" and error["n_prompt_tokens"] > error["n_ctx"]
    with pytest.raises(sse.SSEError, match="ended in the middle of a line"):
        list(sse.iter_events([read(STREAMS / "llamacpp_error_ctx.json")]))


# --- async -------------------------------------------------------------------------------------------------

async def _feed(parts):
    for part in parts:
        await asyncio.sleep(0)
        yield part


@pytest.mark.parametrize("path", SSE_FILES, ids=lambda p: p.name)
def test_async_matches_sync(path):
    body = read(path)
    parts = split_at(body, range(0, len(body), 7))
    total = asyncio.run(sse.aassemble(sse.aiter_chunks(sse.aiter_events(_feed(parts)))))
    assert total == reassemble([body])


def test_async_truncation_raises():
    body = read(STREAMS / "llamacpp_chat_en.sse")

    async def run():
        return await sse.aassemble(sse.aiter_chunks(sse.aiter_events(_feed([body[:len(body) // 2]]))))
    with pytest.raises(sse.SSEError):
        asyncio.run(run())


# --- Ollama native NDJSON ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", NDJSON_FILES, ids=lambda p: p.name)
def test_ndjson_every_split_and_truncation(path):
    body = read(path)
    whole = list(sse.iter_ndjson([body]))
    assert whole[-1]["done"] is True and all(not o["done"] for o in whole[:-1])
    for i in range(len(body) + 1):
        assert list(sse.iter_ndjson([body[:i], body[i:]])) == whole
    last_line_end = body.rstrip(b"\n").rfind(b"\n") + 1
    for i in range(0, last_line_end + 1, 3):
        with pytest.raises(sse.SSEError):
            list(sse.iter_ndjson([body[:i]]))


def test_ndjson_error_object():
    with pytest.raises(sse.StreamError, match="model not found"):
        list(sse.iter_ndjson([b'{"error":"model not found"}\n']))


# ---------------------------------------------------------------- the one fold: typed chunks, reasoning, tools, time

def usage_stream() -> list[dict]:
    """llama-server's stream with stream_options.include_usage (recorded in data/clients/)."""
    body = (STREAMS.parent / "clients" / "llamacpp_stream_include_usage.sse").read_bytes()
    return list(sse.iter_chunks(sse.iter_events([body])))


def test_fold_gets_text_finish_usage_and_the_servers_extras():
    chunks = usage_stream()
    total = sse.assemble(chunks)
    assert total.n_chunks == len(chunks) and total.role == "assistant" and total.finish_reason == "length"
    assert total.usage["completion_tokens"] == 6 == total.n_tokens
    assert total.usage["total_tokens"] == total.usage["prompt_tokens"] + 6
    assert total.text and total.n_deltas <= 6
    assert total.timings["predicted_n"] == 6 and "timings" not in total.extras  # its own field


def test_usage_chunk_has_no_choices_and_without_it_usage_stays_none():
    chunks = usage_stream()
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]
    total = sse.assemble(c for c in chunks if not c.get("usage"))
    assert total.usage is None and total.finish_reason == "length" and total.n_tokens == total.n_deltas


def test_typed_openai_chunks_fold_like_the_dicts_they_came_from():
    from openai.types.chat import ChatCompletionChunk
    chunks = usage_stream()
    assert sse.assemble(ChatCompletionChunk.model_validate(c) for c in chunks) == sse.assemble(chunks)


def test_reasoning_fields_of_every_server_and_the_message_they_make():
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "a"}}]},
              {"choices": [{"index": 0, "delta": {"reasoning_content": "b"}}]},
              {"choices": [{"index": 1, "delta": {"content": "other choice"}}]},
              {"choices": [{"index": 0, "delta": {"content": "c"}, "finish_reason": "stop"}]}]
    total = sse.assemble(chunks)
    assert (total.reasoning, total.text, total.finish_reason, total.n_deltas) == ("ab", "c", "stop", 3)
    assert total.message() == {"role": "assistant", "content": "c", "reasoning_content": "ab"}
    for name in sse.REASONING_FIELDS:
        assert sse.assemble([{"choices": [{"delta": {name: "x"}}]}]).message()[name] == "x"


def test_streamed_tool_call_fragments_join_into_the_non_streamed_message():
    """A real streamed tool call (llama-server, the prefill route of lesson 07) and the same request unstreamed."""
    total = reassemble([read(STREAMS / "llamacpp_tool_call_stream.sse")])
    whole = json.loads((STREAMS / "llamacpp_tool_call.json").read_text())["response"]["choices"][0]["message"]
    assert total.finish_reason == "tool_calls" and total.n_deltas == 8  # the name, then 7 argument pieces
    mine, theirs = total.message(), dict(whole)
    for call in mine["tool_calls"] + theirs["tool_calls"]:
        assert len(call.pop("id")) >= 16  # a fresh random id per request
    assert mine == theirs
    assert json.loads(mine["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}


def test_ollama_native_lines_fold_too():
    body = read(STREAMS / "ollama_api_chat_zh.ndjson")
    lines = list(sse.iter_ndjson([body]))
    total = sse.assemble(lines)
    assert total.text == "".join(line["message"]["content"] for line in lines)
    assert total.finish_reason == lines[-1]["done_reason"] and total.usage["completion_tokens"] == lines[-1]["eval_count"]
    assert total.role == "assistant" and total.n_deltas == sum(1 for line in lines if line["message"]["content"])


def test_arrival_times_give_ttft_and_decode_speed():
    total = sse.Assembled()
    for i, chunk in enumerate(usage_stream()):
        total.add(chunk, now=float(i))
    # chunk 0 is role-only; the text chunks arrived at 1..k; usage says 6 tokens
    assert total.ttft == 1.0 and total.t_deltas == [float(i) for i in range(1, total.n_deltas + 1)]
    assert total.decode_tps == pytest.approx(5 / (total.t_deltas[-1] - 1.0))
    assert sse.Assembled(t_deltas=[2.0]).decode_tps is None and sse.Assembled().ttft is None


def test_as_dict_rejects_other_types():
    with pytest.raises(TypeError):
        sse.as_dict(42)


def test_fold_edge_cases_a_review_found():
    """Ollama's native API sends each tool call whole (two lines, two calls); an empty reasoning field beside a
    real one does not hide it, nor make the server look like it split the thoughts off; a tool call's first chunk
    (the name, arguments still empty) is a token like any other."""
    native = [{"message": {"role": "assistant", "content": "", "tool_calls": [
                  {"function": {"name": "a", "arguments": {"x": 1}}}]}, "done": False},
              {"message": {"role": "assistant", "content": "", "tool_calls": [
                  {"function": {"name": "b", "arguments": {"y": 2}}}]}, "done": True, "done_reason": "stop"}]
    calls = sse.assemble(native).tool_calls
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [("a", {"x": 1}),
                                                                                                ("b", {"y": 2})]
    both = sse.assemble([{"choices": [{"delta": {"reasoning_content": "", "reasoning": "x"}}]}])
    assert (both.reasoning, both.reasoning_field) == ("x", "reasoning")
    empty = sse.assemble([{"choices": [{"delta": {"reasoning_content": "", "content": "<think>hm</think>ok"}}]}])
    assert empty.reasoning_field is None and "reasoning_content" not in empty.message()
    total = sse.Assembled()
    first = total.add({"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                                              "function": {"name": "f", "arguments": ""}}]}}]}, 1.0)
    assert first and total.t_deltas == [1.0]
