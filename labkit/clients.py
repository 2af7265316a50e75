"""Pure helpers for the client lessons (openai-python, langchain-openai): fold streams, read servers' extra fields."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

# Fields of a chat completion (or chunk) that the OpenAI spec defines; anything else is the server's own.
STANDARD_FIELDS = frozenset({"id", "object", "created", "model", "choices", "usage", "system_fingerprint",
                             "service_tier"})


def as_dict(obj: Any) -> dict:
    """Typed openai objects and plain JSON dicts alike, as the dict that went over the wire."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(exclude_unset=True)
    raise TypeError(f"expected a dict or an openai/pydantic object, got {type(obj).__name__}")


def server_extras(response: Any) -> dict:
    """The non-standard top-level fields a server added (llama-server's `timings`, ...), which typed clients keep
    but never document."""
    return {k: v for k, v in as_dict(response).items() if k not in STANDARD_FIELDS}


@dataclass
class StreamResult:
    """What a whole streamed chat completion adds up to."""

    text: str = ""
    reasoning: str = ""
    role: str | None = None
    finish_reason: str | None = None
    usage: dict | None = None
    extras: dict = field(default_factory=dict)
    chunks: int = 0
    content_chunks: int = 0


def collect_stream(chunks: Iterable[Any]) -> StreamResult:
    """Fold chat.completion.chunk objects (typed or dicts) into the text, finish_reason and usage they carry;
    usage arrives in a last chunk with empty `choices` only when `stream_options.include_usage` was sent."""
    out = StreamResult()
    for chunk in chunks:
        data = as_dict(chunk)
        out.chunks += 1
        if data.get("usage"):
            out.usage = data["usage"]
        out.extras.update(server_extras(data))
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            out.role = out.role or delta.get("role")
            if delta.get("content"):
                out.text += delta["content"]
                out.content_chunks += 1
            # llama-server says reasoning_content, Ollama says reasoning
            out.reasoning += delta.get("reasoning_content") or delta.get("reasoning") or ""
            if choice.get("finish_reason"):
                out.finish_reason = choice["finish_reason"]
    return out


def sse_data_lines(raw: str) -> list[dict]:
    """The JSON payloads of a recorded `data:` stream, up to `[DONE]` (recordings only; lesson 02 teaches SSE)."""
    events = []
    for line in raw.splitlines():
        if not line.startswith("data:"):
            continue
        payload = line[len("data:"):].strip()
        if payload == "[DONE]":
            break
        events.append(json.loads(payload))
    return events


_OVERFLOW = re.compile(r"request \((\d+) tokens\) exceeds the available context size \((\d+) tokens\)")


def context_overflow(error: Any) -> tuple[int, int] | None:
    """(prompt tokens, context size) when an error body is llama-server's "prompt too long" 400, else None."""
    body = as_dict(error) if not isinstance(error, str) else {"message": error}
    body = body.get("error", body) if isinstance(body.get("error"), Mapping) else body
    if "n_prompt_tokens" in body and "n_ctx" in body:
        return int(body["n_prompt_tokens"]), int(body["n_ctx"])
    match = _OVERFLOW.search(str(body.get("message", "")))
    return (int(match[1]), int(match[2])) if match else None
