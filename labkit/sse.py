"""A small, strict reader for streamed completions: SSE (OpenAI `/v1`) and NDJSON (Ollama `/api/*`).

Layers, each usable alone and each fed bytes exactly as the network delivers them (any split):

    SSEDecoder      bytes → Event        (incremental UTF-8, CR/LF/CRLF, multi-line data, comments, id, retry)
    iter_events     byte chunks → events (sync; `aiter_events` is the async twin)
    iter_chunks     events → JSON chunks, stops at [DONE], raises on error events and cut-off streams
    Assembled       JSON chunks → text, reasoning, tool calls, finish_reason, usage, timings, arrival
                    times: the one fold every consumer uses (`assemble` folds a whole stream)
    stream_chat     POST + all of the above against a real server (`astream_chat` async)
    iter_ndjson     Ollama's native newline-delimited JSON, same strictness

Strict means: nothing is silently dropped. Invalid UTF-8, a stream that ends mid-event or before its end marker,
data after [DONE], or an error the server sends inside the stream all raise with a message saying what to do.
"""
from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, NamedTuple

import httpx

from .errors import LabkitError
from .net import url_for
from .servers.base import PLACEHOLDER_KEY

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['Assembled', 'SSEError', 'aassemble', 'assemble', 'astream_chat', 'iter_chunks', 'iter_events',
           'iter_ndjson', 'stream_chat']

DONE = "[DONE]"
_EOL = re.compile(r"\r\n|\r|\n")


class SSEError(LabkitError):
    """The bytes are not a complete, well-formed stream (truncated, not UTF-8, not SSE at all)."""


class StreamError(LabkitError):
    """The server reported an error (HTTP status, `event: error`, or an `error` object inside the stream)."""

    def __init__(self, what: str, *, error: object = None, status: int | None = None, **kw) -> None:
        self.error, self.status = error, status
        super().__init__(what, **kw)


class Event(NamedTuple):
    """One dispatched server-sent event (the WHATWG field names). A NamedTuple: immutable and cheap to make,
    which matters at one event per token."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


@dataclass
class SSEDecoder:
    """Feed it bytes as they arrive; it returns the events completed so far. `close()` at end of stream."""

    comments: list[str] = field(default_factory=list)  # `:` lines (keep-alive pings), kept so tests can see them
    _utf8: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("strict"))
    _buf: str = ""
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None
    _retry: int | None = None
    _fields_seen: bool = False
    _offset: int = 0  # bytes fed so far, for error messages
    _started: bool = False

    def feed(self, chunk: bytes) -> list[Event]:
        """Decode `chunk` (any size, any split — even inside a multi-byte character) into finished events."""
        try:
            text = self._utf8.decode(chunk)
        except UnicodeDecodeError as exc:
            raise SSEError(f"The stream is not valid UTF-8 near byte {self._offset + exc.start}: "
                           f"{chunk[max(0, exc.start - 8):exc.end + 8]!r}.",
                           fix="SSE is UTF-8 by definition; the server or a proxy re-encoded it.") from None
        self._offset += len(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")  # the spec allows one leading BOM
        self._buf += text
        events: list[Event] = []
        if "\r" not in self._buf:  # the common case (LF only): plain split, no regex
            *lines, self._buf = self._buf.split("\n")
            for line in lines:
                event = self._line(line)
                if event is not None:
                    events.append(event)
            return events
        pos = 0
        for m in _EOL.finditer(self._buf):
            if m.group() == "\r" and m.end() == len(self._buf):
                break  # a CR at the very end may be the first half of a CRLF split across chunks
            event = self._line(self._buf[pos:m.start()])
            if event is not None:
                events.append(event)
            pos = m.end()
        self._buf = self._buf[pos:]
        return events

    def close(self) -> list[Event]:
        """End of stream: return a last event only if it was complete; a half-received one raises."""
        try:
            self._utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            raise SSEError("The stream ended in the middle of a multi-byte UTF-8 character.",
                           fix="The connection was cut; retry the request.") from None
        tail = self._buf
        events = self.feed(b"\n") if tail.endswith("\r") else []  # a lone final CR is a line end
        if self._buf:
            raise SSEError(f"The stream ended in the middle of a line: {self._buf[:200]!r}.",
                           fix="The connection was cut (timeout, proxy, server crash); retry the request.")
        if self._fields_seen:
            if self._data == [DONE]:  # some llama.cpp builds end with `data: [DONE]\n` and no blank line
                return events + [self._dispatch()]
            raise SSEError(f"The stream ended before the blank line that completes an event "
                           f"(data so far: {chr(10).join(self._data)[:200]!r}).",
                           fix="The connection was cut (timeout, proxy, server crash); retry the request.")
        return events

    def _line(self, line: str) -> Event | None:
        if line.startswith("data: "):  # by far the most common line: skip the general parse
            self._data.append(line[6:])
            self._fields_seen = True
            return None
        if line == "":
            return self._dispatch() if self._fields_seen else None
        if line.startswith(":"):
            self.comments.append(line[1:].removeprefix(" "))
            return None
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        self._fields_seen = True
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        elif name == "error":  # llama.cpp builds of 2025 sent `error: {...}`; the spec would ignore it, we don't
            self._event, self._data = "error", [value]
        return None

    def _dispatch(self) -> Event | None:
        lines, event = self._data, self._event or "message"
        self._data, self._event, self._fields_seen = [], "", False
        if not lines:
            return None  # the spec: an event without data lines is not dispatched (id/retry still stick)
        return Event(lines[0] if len(lines) == 1 else "\n".join(lines), event, self._id, self._retry)


def iter_events(chunks: Iterable[bytes]) -> Iterator[Event]:
    """Events from an iterable of byte chunks (e.g. `httpx.Response.iter_bytes()` or a recorded file)."""
    decoder = SSEDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.close()


async def aiter_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[Event]:
    """The async twin of `iter_events` (e.g. over `httpx.Response.aiter_bytes()`)."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.close():
        yield event


def _error_text(error: object) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


_decode_json = json.JSONDecoder().decode  # json.loads minus its per-call argument checks: one call per token


class _ChunkReader:
    """State shared by the sync and async chunk iterators: [DONE] seen, JSON decode, error detection."""

    def __init__(self, require_done: bool) -> None:
        self.done, self.require_done = False, require_done

    def take(self, event: Event) -> dict | None:
        if self.done:
            raise SSEError(f"Data after [DONE]: {event.data[:200]!r}.", fix="The server broke the protocol.")
        if event.event == "error":
            raise StreamError(f"The server sent an error event: {event.data[:500]}",
                              error=_maybe_json(event.data), fix="Read the message; fix the request and retry.")
        if event.data == DONE:
            self.done = True
            return None
        try:
            obj = _decode_json(event.data)
        except json.JSONDecodeError as exc:
            raise SSEError(f"An event's data is not JSON ({exc.msg} at char {exc.pos}): {event.data[:200]!r}.",
                           fix="Is this an OpenAI-compatible streaming endpoint?") from None
        if isinstance(obj, dict) and "error" in obj:
            raise StreamError(f"The server reported an error mid-stream: {_error_text(obj['error'])}",
                              error=obj["error"], fix="Read the message; fix the request and retry.")
        return obj

    def finish(self) -> None:
        if self.require_done and not self.done:
            raise SSEError("The stream ended without `data: [DONE]`: the answer may be incomplete.",
                           fix="The connection was cut (timeout, proxy, server crash); retry the request.")


def _maybe_json(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def iter_chunks(events: Iterable[Event], *, require_done: bool = True) -> Iterator[dict]:
    """The JSON objects of an OpenAI-style stream, up to `[DONE]` (which must come, unless require_done=False)."""
    reader = _ChunkReader(require_done)
    for event in events:
        obj = reader.take(event)
        if obj is not None:
            yield obj
    reader.finish()


async def aiter_chunks(events: AsyncIterable[Event], *, require_done: bool = True) -> AsyncIterator[dict]:
    reader = _ChunkReader(require_done)
    async for event in events:
        obj = reader.take(event)
        if obj is not None:
            yield obj
    reader.finish()


# Where servers put a model's thoughts when they separate them from `content`: llama.cpp and DeepSeek say
# `reasoning_content`, Ollama's /v1 and vLLM `reasoning`, Ollama's native API `thinking`. The one list of them.
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")

# Fields of a chat completion (or chunk) that the OpenAI spec defines; anything else is the server's own.
STANDARD_FIELDS = frozenset({"id", "object", "created", "model", "choices", "usage", "system_fingerprint",
                             "service_tier"})


def as_dict(obj: object) -> dict:
    """Typed openai objects and plain JSON dicts alike, as the dict that went over the wire."""
    if isinstance(obj, dict):
        return obj
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(exclude_unset=True)
    raise TypeError(f"expected a dict or an openai/pydantic object, got {type(obj).__name__}")


def reasoning_field(message: object) -> tuple[str, str] | None:
    """(field name, text) of the server's own reasoning field in a message or delta (dict or openai object): the
    first of REASONING_FIELDS with text (a server may send an empty one beside it); None when it sent none."""
    message = as_dict(message)
    for name in REASONING_FIELDS:
        if isinstance(message.get(name), str) and message[name]:
            return name, message[name]
    return None


class Delta(NamedTuple):
    """What one chunk added to choice 0: answer text, thoughts (from a reasoning field), tool-call argument text."""

    content: str = ""
    reasoning: str = ""
    tool_text: str = ""

    def __bool__(self) -> bool:  # a chunk that carried generated text: one token, as a client counts them
        return bool(self.content or self.reasoning or self.tool_text)


@dataclass(kw_only=True)
class Assembled:
    """A streamed chat completion put back together: what the non-streamed reply would have said, and when each
    piece arrived. The one fold for every consumer (lessons, widgets, bench, probe, clients): it takes OpenAI
    `chat.completion.chunk`s (dicts or openai-python objects) and Ollama's native `/api/chat` lines."""

    text: str = ""
    reasoning: str = ""
    reasoning_field: str | None = None  # the field name the server used for thoughts, if any
    tool_calls: list[dict] = field(default_factory=list)  # fragments joined per index: id, type, name, arguments
    role: str | None = None
    finish_reason: str | None = None
    usage: dict | None = None
    timings: dict | None = None  # llama-server's own measurement, sent with the last chunk
    extras: dict = field(default_factory=dict)  # other non-standard top-level fields of the chunks
    id: str | None = None
    model: str | None = None
    n_chunks: int = 0
    n_deltas: int = 0  # chunks that carried generated text (answer, thoughts or tool-call arguments)
    t_deltas: list[float] = field(default_factory=list)  # when each of those arrived (the `now` given to add)
    t_end: float | None = None  # when the stream ended, on the same clock (set by whoever reads the stream)

    def add(self, chunk: object, now: float | None = None) -> Delta:
        """Fold one chunk (choice 0) into the total; returns what it added. With `now` (any clock, e.g. seconds
        since the request), the arrival of every chunk that carried text is recorded for the timing metrics."""
        chunk = as_dict(chunk)
        self.n_chunks += 1
        self.id, self.model = self.id or chunk.get("id"), self.model or chunk.get("model")
        self.usage = chunk.get("usage") or self.usage
        self.timings = chunk.get("timings") or self.timings
        for key in chunk.keys() - STANDARD_FIELDS - {"timings", "message", "done", "done_reason"}:
            self.extras[key] = chunk[key]
        if "message" in chunk:  # Ollama /api/chat: one message per line, counts on the last
            delta = self._delta(chunk["message"] or {}, whole_calls=True)
            self.finish_reason = chunk.get("done_reason") or self.finish_reason
            if chunk.get("done") and "eval_count" in chunk:
                self.usage = {"prompt_tokens": chunk.get("prompt_eval_count"),
                              "completion_tokens": chunk["eval_count"]}
        else:
            delta = Delta()
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                delta = self._delta(choice.get("delta") or {})
                self.finish_reason = choice.get("finish_reason") or self.finish_reason
        if delta:
            self.n_deltas += 1
            if now is not None:
                self.t_deltas.append(now)
        return delta

    def _delta(self, delta: dict, *, whole_calls: bool = False) -> Delta:
        """Fold choice 0's delta. `whole_calls`: each tool call arrives complete (Ollama's native API), so every
        one is a new call; OpenAI streams send fragments that `index` joins."""
        self.role = delta.get("role") or self.role
        content = delta.get("content") or ""
        self.text += content
        found = reasoning_field(delta)
        thought = found[1] if found else ""
        if found:
            self.reasoning_field = found[0]
        self.reasoning += thought
        tool_text = ""
        for i, call in enumerate(delta.get("tool_calls") or []):
            index = len(self.tool_calls) if whole_calls else call.get("index", i)
            while len(self.tool_calls) <= index:
                self.tool_calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
            mine, fn = self.tool_calls[index], call.get("function") or {}
            mine["id"] = call.get("id") or mine["id"]
            mine["type"] = call.get("type") or mine["type"]
            mine["function"]["name"] += fn.get("name") or ""
            arguments = fn.get("arguments") or ""
            if not isinstance(arguments, str):  # Ollama's native API sends the arguments as an object, whole
                arguments = json.dumps(arguments)
            mine["function"]["arguments"] += arguments
            tool_text += (fn.get("name") or "") + arguments  # the name's chunk is generated text too
        return Delta(content, thought, tool_text)

    def message(self) -> dict:
        """The assistant message a non-streamed request would have returned (thoughts under the server's name)."""
        msg: dict = {"role": self.role or "assistant", "content": self.text}
        if self.reasoning_field:
            msg[self.reasoning_field] = self.reasoning
        if self.tool_calls:
            msg["tool_calls"] = self.tool_calls
        return msg

    @property
    def n_tokens(self) -> int:
        """Tokens generated: the server's usage count when it sent one, else one per chunk that carried text."""
        if self.usage and self.usage.get("completion_tokens") is not None:
            return int(self.usage["completion_tokens"])
        return self.n_deltas

    @property
    def ttft(self) -> float | None:
        """Time to first token (on the clock of `now`, from whatever zero the caller chose): the first chunk that
        carried text; role-only chunks don't count."""
        return self.t_deltas[0] if self.t_deltas else None

    @property
    def decode_tps(self) -> float | None:
        """Decode speed as the client sees it: the first token's time is prompt processing, so the n-1 tokens
        after it over the time from the first to the last text chunk."""
        t = self.t_deltas
        if len(t) < 2 or t[-1] <= t[0] or self.n_tokens < 2:
            return None
        return (self.n_tokens - 1) / (t[-1] - t[0])


def assemble(chunks: Iterable[object]) -> Assembled:
    """Reassemble the text and the final fields of a chat stream (dict or openai-python chunks)."""
    total = Assembled()
    for chunk in chunks:
        total.add(chunk)
    return total


async def aassemble(chunks: AsyncIterable[dict]) -> Assembled:
    total = Assembled()
    async for chunk in chunks:
        total.add(chunk)
    return total


def check_stream_response(response: httpx.Response) -> None:
    """Raise a clear StreamError when the server answered with an error (or anything that is not a stream)."""
    ctype = response.headers.get("content-type", "")
    if response.status_code == 200 and ctype.startswith(("text/event-stream", "application/x-ndjson")):
        return
    body = response.read().decode("utf-8", "replace")
    error = _maybe_json(body)
    message = _error_text(error.get("error", error)) if isinstance(error, dict) else body[:500]
    raise StreamError(f"HTTP {response.status_code} ({ctype or 'no content-type'}) instead of a stream: {message}",
                      error=error, status=response.status_code,
                      fix="Streaming errors before the first byte arrive as a plain JSON error; fix the request.")


async def acheck_stream_response(response: httpx.Response) -> None:
    if response.status_code != 200 or not response.headers.get("content-type", "").startswith(
            ("text/event-stream", "application/x-ndjson")):
        await response.aread()
    check_stream_response(response)


def stalled(url: str, chunks: int, timeout: float) -> SSEError:
    """What a stream that stopped sending (a hung or paused server) looks like, in words a learner can act on."""
    return SSEError(f"The server at {url} stopped sending: nothing for {timeout:.0f} s after {chunks} chunk(s).",
                    fix="Is it alive and not overloaded? `labkit status`; a server paused (SIGSTOP) or stuck in a "
                        "long prompt looks like this. Raise `timeout` for slow models.")


def stream_chat(base_url: str, payload: dict, *, api_key: str = PLACEHOLDER_KEY,
                timeout: float = 60.0, connect_timeout: float | None = None,
                path: str = "/v1/chat/completions") -> Iterator[dict]:
    """POST a streamed chat request and yield its JSON chunks (strictly: see the module docstring). `base_url`
    may be the server root or its /v1. `timeout` is the longest silence between bytes; `connect_timeout` (default
    the same) how long to wait for the connection."""
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "text/event-stream"}
    url = url_for(base_url, path)
    chunks = 0
    try:
        with httpx.stream("POST", url, json={**payload, "stream": True}, headers=headers,
                          timeout=httpx.Timeout(timeout, connect=connect_timeout or timeout)) as response:
            check_stream_response(response)
            for chunk in iter_chunks(iter_events(response.iter_bytes())):
                chunks += 1
                yield chunk
    except httpx.ReadTimeout:
        raise stalled(url, chunks, timeout) from None


async def astream_chat(base_url: str, payload: dict, *, api_key: str = PLACEHOLDER_KEY,
                       timeout: float = 60.0, path: str = "/v1/chat/completions") -> AsyncIterator[dict]:
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "text/event-stream"}
    url = url_for(base_url, path)
    chunks = 0
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            async with client.stream("POST", url, json={**payload, "stream": True}, headers=headers) as response:
                await acheck_stream_response(response)
                async for chunk in aiter_chunks(aiter_events(response.aiter_bytes())):
                    chunks += 1
                    yield chunk
    except httpx.ReadTimeout:
        raise stalled(url, chunks, timeout) from None


@dataclass
class NDJSONDecoder:
    """Ollama's native streams: one JSON object per line; the last one says `"done": true`."""

    _utf8: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("strict"))
    _buf: str = ""
    done: bool = False

    def feed(self, chunk: bytes) -> list[dict]:
        try:
            self._buf += self._utf8.decode(chunk)
        except UnicodeDecodeError as exc:
            raise SSEError(f"The NDJSON stream is not valid UTF-8: {exc}.") from None
        *lines, self._buf = self._buf.split("\n")
        return [obj for line in lines if (obj := self._line(line)) is not None]

    def close(self) -> list[dict]:
        try:
            self._utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            raise SSEError("The NDJSON stream ended inside a multi-byte UTF-8 character.") from None
        last = [obj for obj in [self._line(self._buf)] if obj is not None]
        self._buf = ""
        if not self.done:
            raise SSEError('The NDJSON stream ended before an object with "done": true.',
                           fix="The connection was cut (timeout, proxy, server crash); retry the request.")
        return last

    def _line(self, line: str) -> dict | None:
        if not line.strip():
            return None
        if self.done:
            raise SSEError(f'Data after the "done": true object: {line[:200]!r}.')
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SSEError(f"An NDJSON line is not JSON ({exc.msg}): {line[:200]!r}.",
                           fix="The stream was cut mid-line or this is not an NDJSON endpoint.") from None
        if "error" in obj:
            raise StreamError(f"Ollama reported an error mid-stream: {_error_text(obj['error'])}", error=obj["error"])
        self.done = bool(obj.get("done"))
        return obj


def iter_ndjson(chunks: Iterable[bytes]) -> Iterator[dict]:
    """Objects from an NDJSON byte stream (Ollama `/api/chat`, `/api/generate`), strictly ending with done."""
    decoder = NDJSONDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.close()


def record(url: str, payload: dict, path: str | Path, *, headers: dict[str, str] | None = None,
           timeout: float = 120.0) -> bytes:
    """Save a real response body byte-for-byte (and its request beside it) as test data for this module."""
    path = Path(path)
    with httpx.stream("POST", url, json=payload, headers=headers or {}, timeout=timeout) as response:
        body = b"".join(response.iter_raw())
    path.write_bytes(body)
    meta = {"url": url, "request": payload, "status": response.status_code,
            "content_type": response.headers.get("content-type")}
    path.with_suffix(".request.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n")
    return body
