"""The probe's checks, pure: what each one sends (`CHECKS`: name, requests, judge) and how its reply is judged.

A judge answers True (✔), False (✘) or None (· — informational: the server is allowed to do either, the detail
says which). Unit-tested on replies recorded from the real servers (data/bench/probe_*.json).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from ..models import same_model
from ..sse import REASONING_FIELDS, Assembled, iter_chunks, iter_events
from ..tables import MARK, render, table

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"], "additionalProperties": False}
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@dataclass
class HttpReply:
    """What came back for one check, as recorded: status, JSON body (or raw SSE text for streams)."""

    status: int
    body: object = None
    text: str = ""
    seconds: float = 0.0


@dataclass
class Check:
    name: str
    ok: bool | None
    detail: str


# ---------------------------------------------------------------- small helpers for judges

def _choice(reply: HttpReply) -> dict:
    return ((reply.body or {}).get("choices") or [{}])[0] if isinstance(reply.body, dict) else {}


def _content(reply: HttpReply) -> str:
    return (_choice(reply).get("message") or {}).get("content") or ""


def _status_fail(reply: HttpReply) -> tuple[bool, str] | None:
    if reply.status != 200:
        err = reply.body.get("error") if isinstance(reply.body, dict) else None
        msg = (err.get("message") if isinstance(err, dict) else err) or reply.text[:120]
        return False, f"HTTP {reply.status}: {str(msg)[:120]}"
    return None


def sse_chunks(text: str) -> tuple[list[dict], bool]:
    """The JSON chunks of a recorded SSE body and whether it ended with [DONE]."""
    chunks = list(iter_chunks(iter_events([text.encode()]), require_done=False))
    return chunks, "data: [DONE]" in text


# ---------------------------------------------------------------- judges: HttpReply(s) → (ok, detail)

def judge_models(r: HttpReply, model: str) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    ids = [m.get("id") for m in (r.body or {}).get("data", [])]
    ok = r.body.get("object") == "list" and any(same_model(model, i) for i in ids)
    return ok, f"ids {ids[:3]}"


def judge_chat(r: HttpReply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    usage = r.body.get("usage") or {}
    ok = (r.body.get("object") == "chat.completion" and isinstance(_content(r), str)
          and _choice(r).get("finish_reason") in ("stop", "length") and isinstance(usage.get("completion_tokens"), int))
    return ok, f"finish_reason={_choice(r).get('finish_reason')}, usage={usage.get('prompt_tokens')}+" \
               f"{usage.get('completion_tokens')}"


def judge_stream(r: HttpReply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    chunks, done = sse_chunks(r.text)
    total = Assembled()
    deltas = sum(bool(total.add(c).content) for c in chunks)  # chunks that carried answer text
    ok = done and deltas > 0 and all(c.get("object") == "chat.completion.chunk" for c in chunks)
    return ok, f"{len(chunks)} chunks, {deltas} with content, [DONE] {'yes' if done else 'missing'}"


def judge_include_usage(r: HttpReply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    chunks, _ = sse_chunks(r.text)
    last = chunks[-1] if chunks else {}
    ok = bool(last.get("usage")) and last.get("choices") == []
    extra = " + timings" if last.get("timings") else ""
    return ok, f"last chunk: choices={last.get('choices')!r}, usage={'yes' if last.get('usage') else 'no'}{extra}"


def judge_stop(r: HttpReply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    text, fr = _content(r), _choice(r).get("finish_reason")
    return ("\n" not in text and fr == "stop"), f"finish_reason={fr}, text={text[:30]!r}"


def judge_same(a: HttpReply, b: HttpReply) -> tuple[bool, str]:
    """Seed determinism: the same seed at temperature > 0 must give the same text."""
    if (bad := _status_fail(a) or _status_fail(b)):
        return bad
    same = _content(a) == _content(b)
    return same, "identical" if same else f"{_content(a)[:25]!r} ≠ {_content(b)[:25]!r}"


def judge_n2(r: HttpReply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    n = len(r.body.get("choices") or [])
    return n == 2, f"{n} choice(s) for n=2"


def judge_logprobs(r: HttpReply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    content = (_choice(r).get("logprobs") or {}).get("content") or []
    first = content[0] if content else {}
    ok = bool(content) and isinstance(first.get("logprob"), (int, float)) and len(first.get("top_logprobs", [])) == 2
    return ok, f"{len(content)} tokens, first={first.get('token')!r} {first.get('logprob')}"


def judge_max_completion_tokens(r: HttpReply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    used = (r.body.get("usage") or {}).get("completion_tokens")
    fr = _choice(r).get("finish_reason")
    return (used is not None and used <= 5 and fr == "length"), f"completion_tokens={used}, finish_reason={fr}"


def _json_content(r: HttpReply) -> tuple[object, tuple[bool, str] | None]:
    """The reply's text parsed as JSON, or the verdict that ends the judging (an HTTP error, or not JSON)."""
    if (bad := _status_fail(r)):
        return None, bad
    try:
        return json.loads(_content(r)), None
    except ValueError:
        return None, (False, f"not JSON: {_content(r)[:40]!r}")


def judge_json_object(r: HttpReply) -> tuple[bool, str]:
    obj, verdict = _json_content(r)
    if verdict:
        return verdict
    return isinstance(obj, dict), f"parsed {type(obj).__name__} with keys {list(obj)[:3] if isinstance(obj, dict) else ''}"


def judge_json_schema(r: HttpReply) -> tuple[bool, str]:
    obj, verdict = _json_content(r)
    if verdict:
        return verdict
    ok = isinstance(obj, dict) and set(obj) == {"city", "population"} and isinstance(obj.get("population"), int)
    return ok, f"{obj}"[:60]


def judge_tools_accepted(r: HttpReply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    calls = (_choice(r).get("message") or {}).get("tool_calls") or []
    return True, f"accepted; finish_reason={_choice(r).get('finish_reason')}, {len(calls)} tool call(s)"


def judge_tool_choice(r: HttpReply) -> tuple[bool, str]:
    """A forced tool_choice must come back as a tool call to that function with JSON arguments."""
    if (bad := _status_fail(r)):
        return bad
    calls = (_choice(r).get("message") or {}).get("tool_calls") or []
    if not calls:
        return False, f"no tool_calls (finish_reason={_choice(r).get('finish_reason')})"
    fn = calls[0].get("function") or {}
    try:
        args = json.loads(fn.get("arguments") or "")
    except ValueError:
        return False, f"arguments not JSON: {fn.get('arguments')!r}"[:80]
    return fn.get("name") == "get_weather" and isinstance(args, dict), f"{fn.get('name')}({args})"[:60]


def judge_reasoning(r: HttpReply) -> tuple[bool | None, str]:
    """Which field carries reasoning (`labkit.sse.REASONING_FIELDS`): `reasoning_content` (llama.cpp, DeepSeek),
    `reasoning` (Ollama), none."""
    if (bad := _status_fail(r)):
        return bad
    msg = _choice(r).get("message") or {}
    fields = [k for k in REASONING_FIELDS if k in msg]
    return None, f"reasoning_effort accepted; field: {', '.join(fields) or 'none (model does not think)'}"


def judge_responses(r: HttpReply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    texts = [c.get("text", "") for item in r.body.get("output") or [] if item.get("type") == "message"
             for c in item.get("content") or [] if c.get("type") == "output_text"]
    ok = r.body.get("object") == "response" and bool(texts)
    return ok, f"status={r.body.get('status')}, output_text={''.join(texts)[:25]!r}"


def judge_embeddings(r: HttpReply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    vec = ((r.body.get("data") or [{}])[0]).get("embedding") or []
    return (len(vec) > 0 and all(isinstance(x, (int, float)) for x in vec[:8])), f"dimension {len(vec)}"


def judge_messages(r: HttpReply) -> tuple[bool, str]:
    """Anthropic's Messages API (`/v1/messages`): a `message` with text content blocks, a stop_reason, usage."""
    if (bad := _status_fail(r)):
        return bad
    b = r.body if isinstance(r.body, dict) else {}
    text = "".join(c.get("text", "") for c in b.get("content") or [] if c.get("type") == "text")
    usage = b.get("usage") or {}
    ok = (b.get("type") == "message" and bool(text) and b.get("stop_reason") in
          ("end_turn", "max_tokens", "stop_sequence", "tool_use") and "output_tokens" in usage)
    return ok, f"stop_reason={b.get('stop_reason')}, text={text[:25]!r}"


def judge_error_shape(r: HttpReply) -> tuple[bool, str]:
    """A bad request must be a 4xx with OpenAI's {"error": {"message": ...}} body (clients read that)."""
    err = r.body.get("error") if isinstance(r.body, dict) else None
    ok = 400 <= r.status < 500 and isinstance(err, dict) and isinstance(err.get("message"), str)
    return ok, f"HTTP {r.status}, error={'object' if isinstance(err, dict) else type(err).__name__}: " \
               f"{(err or {}).get('message', r.text) if isinstance(err, dict) else r.text[:40]}"[:90]


def judge_auth(r: HttpReply) -> tuple[bool | None, str]:
    """A wrong key: 401 with an error object (server has --api-key) or accepted (an open local server)."""
    if r.status == 200:
        return None, "open: any key accepted (no key configured on the server)"
    err = r.body.get("error") if isinstance(r.body, dict) else None
    return r.status == 401 and isinstance(err, dict), f"HTTP {r.status} for a wrong key"


# ---------------------------------------------------------------- the checks: requests and judge, one row each

def _chat(model: str, content: str = "Say hello.", max_tokens: int = 16, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "seed": 42, **extra}


CITY = "Describe Paris as JSON with keys city and population."
CHAT = "/v1/chat/completions"
Request = tuple[str, str, dict]  # method, path, payload
Judge = Callable[[list[HttpReply], str], "tuple[bool | None, str]"]


@dataclass(frozen=True)
class CheckSpec:
    """One check: the request(s) it sends for a model, and the judge of the replies (replies, model) → verdict."""

    name: str
    requests: Callable[[str], list[Request]]
    judge: Judge


def _post(payload: Callable[[str], dict], path: str = CHAT, times: int = 1) -> Callable[[str], list[Request]]:
    return lambda model: [("POST", path, payload(model))] * times


def _one(fn: Callable[[HttpReply], tuple[bool | None, str]]) -> Judge:
    """Most judges look at one reply and need no model name."""
    return lambda replies, model: fn(replies[0])


_WEATHER = "What is the weather in Paris?"
_FORCED = {"type": "function", "function": {"name": "get_weather"}}
_STRICT = {"type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": SCHEMA}}

CHECKS: list[CheckSpec] = [
    CheckSpec("models list", lambda m: [("GET", "/v1/models", {})], lambda rs, m: judge_models(rs[0], m)),
    CheckSpec("non-stream chat", _post(lambda m: _chat(m, "你好")), _one(judge_chat)),
    CheckSpec("stream", _post(lambda m: _chat(m, "你好", stream=True)), _one(judge_stream)),
    CheckSpec("stream include_usage", _post(lambda m: _chat(m, stream=True, stream_options={"include_usage": True})),
              _one(judge_include_usage)),
    CheckSpec("stop", _post(lambda m: _chat(m, "Count from 1 to 20, one number per line.", 40, stop=["\n"])),
              _one(judge_stop)),
    CheckSpec("seed determinism",  # the same seeded request twice
              _post(lambda m: _chat(m, "Tell me a short story.", 24, temperature=0.9, seed=1234), times=2),
              lambda rs, m: judge_same(*rs)),
    CheckSpec("n > 1", _post(lambda m: _chat(m, n=2, temperature=0.8)), _one(judge_n2)),
    CheckSpec("logprobs", _post(lambda m: _chat(m, max_tokens=4, logprobs=True, top_logprobs=2)),
              _one(judge_logprobs)),
    CheckSpec("max_completion_tokens",
              _post(lambda m: {k: v for k, v in _chat(m, "Tell me a long story.").items() if k != "max_tokens"}
                    | {"max_completion_tokens": 5}), _one(judge_max_completion_tokens)),
    CheckSpec("json_object", _post(lambda m: _chat(m, CITY, 48, response_format={"type": "json_object"})),
              _one(judge_json_object)),
    CheckSpec("json_schema", _post(lambda m: _chat(m, CITY, 48, response_format=_STRICT)), _one(judge_json_schema)),
    CheckSpec("tools", _post(lambda m: _chat(m, _WEATHER, 48, tools=[TOOL])), _one(judge_tools_accepted)),
    CheckSpec("tool_choice (forced)", _post(lambda m: _chat(m, _WEATHER, 48, tools=[TOOL], tool_choice=_FORCED)),
              _one(judge_tool_choice)),
    CheckSpec("reasoning fields", _post(lambda m: _chat(m, reasoning_effort="low")), _one(judge_reasoning)),
    CheckSpec("/v1/responses", _post(lambda m: {"model": m, "input": "Say hello.", "max_output_tokens": 16,
                                                "temperature": 0}, "/v1/responses"), _one(judge_responses)),
    CheckSpec("/v1/embeddings", _post(lambda m: {"model": m, "input": "hello"}, "/v1/embeddings"),
              _one(judge_embeddings)),
    CheckSpec("/v1/messages (Anthropic)",
              _post(lambda m: {"model": m, "max_tokens": 16, "temperature": 0,
                               "messages": [{"role": "user", "content": "Say hello."}]}, "/v1/messages"),
              _one(judge_messages)),
    CheckSpec("error shape", _post(lambda m: {"model": m, "max_tokens": 8}), _one(judge_error_shape)),  # no messages
    CheckSpec("auth (wrong key)", lambda m: [("POST+BADKEY", CHAT, _chat(m, max_tokens=2))], _one(judge_auth)),
]
BY_NAME = {c.name: c for c in CHECKS}


def judge(name: str, replies: list[HttpReply], model: str) -> Check:
    """Apply a check's judge to its recorded replies (pure: what the unit tests call)."""
    ok, detail = BY_NAME[name].judge(replies, model)
    return Check(name, ok, detail)


def format_table(results: dict[str, list[Check]], *, details: bool = True) -> str:
    """Checks down, servers across: ✔ passed, ✘ failed, · informational; the details below, one line each."""
    servers = list(results)
    names = [c.name for c in next(iter(results.values()))] if results else []
    marks = table(["check", *servers], ([name, *(MARK[results[s][i].ok] for s in servers)]
                                        for i, name in enumerate(names)))
    for col in marks.columns[1:]:
        col.justify = "center"
    passed = "passed: " + ", ".join(f"{s} {sum(c.ok is True for c in results[s])}/"
                                    f"{sum(c.ok is not None for c in results[s])}" for s in servers)
    parts: list[object] = [marks]
    if details:
        parts.append(table(["check", "server", "detail"], ([name if j == 0 else "", s, results[s][i].detail]
                                                          for i, name in enumerate(names)
                                                          for j, s in enumerate(servers))))
    return render(*parts, passed)
