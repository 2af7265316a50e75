"""`labkit probe URL…`: how OpenAI-compatible is a server, really? A battery of small real requests, one ✔/✘ each.

    from labkit import probe
    results = probe.probe("http://127.0.0.1:8080", model="smollm2-135m")
    print(probe.format_table({"llama-server": results}))

Each check is a request (`CHECKS`: name → payload builder) and a pure judge of the reply (`judge_*`), so the
judges are unit-tested on replies recorded from the real servers (data/bench/probe_*.json). A judge answers
True (✔), False (✘) or None (· — informational: the server is allowed to do either, the detail says which).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Callable

import httpx

from .errors import LabkitError
from .net import url_for
from .sse import REASONING_FIELDS, assemble, iter_chunks, iter_events
from .servers.base import PLACEHOLDER_KEY

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
          "required": ["city", "population"], "additionalProperties": False}
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@dataclass
class Reply:
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

def _choice(reply: Reply) -> dict:
    return ((reply.body or {}).get("choices") or [{}])[0] if isinstance(reply.body, dict) else {}


def _content(reply: Reply) -> str:
    return (_choice(reply).get("message") or {}).get("content") or ""


def _status_fail(reply: Reply) -> tuple[bool, str] | None:
    if reply.status != 200:
        err = reply.body.get("error") if isinstance(reply.body, dict) else None
        msg = (err.get("message") if isinstance(err, dict) else err) or reply.text[:120]
        return False, f"HTTP {reply.status}: {str(msg)[:120]}"
    return None


def sse_chunks(text: str) -> tuple[list[dict], bool]:
    """The JSON chunks of a recorded SSE body and whether it ended with [DONE]."""
    chunks = list(iter_chunks(iter_events([text.encode()]), require_done=False))
    return chunks, "data: [DONE]" in text


# ---------------------------------------------------------------- judges: Reply(s) → (ok, detail)

def judge_models(r: Reply, model: str) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    ids = [m.get("id") for m in (r.body or {}).get("data", [])]
    ok = r.body.get("object") == "list" and any(i == model or i == f"{model}:latest" for i in ids)
    return ok, f"ids {ids[:3]}"


def judge_chat(r: Reply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    usage = r.body.get("usage") or {}
    ok = (r.body.get("object") == "chat.completion" and isinstance(_content(r), str)
          and _choice(r).get("finish_reason") in ("stop", "length") and isinstance(usage.get("completion_tokens"), int))
    return ok, f"finish_reason={_choice(r).get('finish_reason')}, usage={usage.get('prompt_tokens')}+" \
               f"{usage.get('completion_tokens')}"


def judge_stream(r: Reply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    chunks, done = sse_chunks(r.text)
    deltas = assemble(chunks).n_deltas
    ok = done and deltas > 0 and all(c.get("object") == "chat.completion.chunk" for c in chunks)
    return ok, f"{len(chunks)} chunks, {deltas} with content, [DONE] {'yes' if done else 'missing'}"


def judge_include_usage(r: Reply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    chunks, _ = sse_chunks(r.text)
    last = chunks[-1] if chunks else {}
    ok = bool(last.get("usage")) and last.get("choices") == []
    extra = " + timings" if last.get("timings") else ""
    return ok, f"last chunk: choices={last.get('choices')!r}, usage={'yes' if last.get('usage') else 'no'}{extra}"


def judge_stop(r: Reply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    text, fr = _content(r), _choice(r).get("finish_reason")
    return ("\n" not in text and fr == "stop"), f"finish_reason={fr}, text={text[:30]!r}"


def judge_same(a: Reply, b: Reply) -> tuple[bool, str]:
    """Seed determinism: the same seed at temperature > 0 must give the same text."""
    if (bad := _status_fail(a) or _status_fail(b)):
        return bad
    same = _content(a) == _content(b)
    return same, "identical" if same else f"{_content(a)[:25]!r} ≠ {_content(b)[:25]!r}"


def judge_n2(r: Reply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    n = len(r.body.get("choices") or [])
    return n == 2, f"{n} choice(s) for n=2"


def judge_logprobs(r: Reply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    content = (_choice(r).get("logprobs") or {}).get("content") or []
    first = content[0] if content else {}
    ok = bool(content) and isinstance(first.get("logprob"), (int, float)) and len(first.get("top_logprobs", [])) == 2
    return ok, f"{len(content)} tokens, first={first.get('token')!r} {first.get('logprob')}"


def judge_max_completion_tokens(r: Reply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    used = (r.body.get("usage") or {}).get("completion_tokens")
    fr = _choice(r).get("finish_reason")
    return (used is not None and used <= 5 and fr == "length"), f"completion_tokens={used}, finish_reason={fr}"


def judge_json_object(r: Reply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    try:
        obj = json.loads(_content(r))
    except ValueError:
        return False, f"not JSON: {_content(r)[:40]!r}"
    return isinstance(obj, dict), f"parsed {type(obj).__name__} with keys {list(obj)[:3] if isinstance(obj, dict) else ''}"


def judge_json_schema(r: Reply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    try:
        obj = json.loads(_content(r))
    except ValueError:
        return False, f"not JSON: {_content(r)[:40]!r}"
    ok = isinstance(obj, dict) and set(obj) == {"city", "population"} and isinstance(obj.get("population"), int)
    return ok, f"{obj}"[:60]


def judge_tools_accepted(r: Reply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    calls = (_choice(r).get("message") or {}).get("tool_calls") or []
    return True, f"accepted; finish_reason={_choice(r).get('finish_reason')}, {len(calls)} tool call(s)"


def judge_tool_choice(r: Reply) -> tuple[bool, str]:
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


def judge_reasoning(r: Reply) -> tuple[bool | None, str]:
    """Which field carries reasoning (`labkit.sse.REASONING_FIELDS`): `reasoning_content` (llama.cpp, DeepSeek),
    `reasoning` (Ollama), none."""
    if (bad := _status_fail(r)):
        return bad
    msg = _choice(r).get("message") or {}
    fields = [k for k in REASONING_FIELDS if k in msg]
    return None, f"reasoning_effort accepted; field: {', '.join(fields) or 'none (model does not think)'}"


def judge_responses(r: Reply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    texts = [c.get("text", "") for item in r.body.get("output") or [] if item.get("type") == "message"
             for c in item.get("content") or [] if c.get("type") == "output_text"]
    ok = r.body.get("object") == "response" and bool(texts)
    return ok, f"status={r.body.get('status')}, output_text={''.join(texts)[:25]!r}"


def judge_embeddings(r: Reply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    vec = ((r.body.get("data") or [{}])[0]).get("embedding") or []
    return (len(vec) > 0 and all(isinstance(x, (int, float)) for x in vec[:8])), f"dimension {len(vec)}"


def judge_messages(r: Reply) -> tuple[bool, str]:
    """Anthropic's Messages API (`/v1/messages`): a `message` with text content blocks, a stop_reason, usage."""
    if (bad := _status_fail(r)):
        return bad
    b = r.body if isinstance(r.body, dict) else {}
    text = "".join(c.get("text", "") for c in b.get("content") or [] if c.get("type") == "text")
    usage = b.get("usage") or {}
    ok = (b.get("type") == "message" and bool(text) and b.get("stop_reason") in
          ("end_turn", "max_tokens", "stop_sequence", "tool_use") and "output_tokens" in usage)
    return ok, f"stop_reason={b.get('stop_reason')}, text={text[:25]!r}"


def judge_error_shape(r: Reply) -> tuple[bool, str]:
    """A bad request must be a 4xx with OpenAI's {"error": {"message": ...}} body (clients read that)."""
    err = r.body.get("error") if isinstance(r.body, dict) else None
    ok = 400 <= r.status < 500 and isinstance(err, dict) and isinstance(err.get("message"), str)
    return ok, f"HTTP {r.status}, error={'object' if isinstance(err, dict) else type(err).__name__}: " \
               f"{(err or {}).get('message', r.text) if isinstance(err, dict) else r.text[:40]}"[:90]


def judge_auth(r: Reply) -> tuple[bool | None, str]:
    """A wrong key: 401 with an error object (server has --api-key) or accepted (an open local server)."""
    if r.status == 200:
        return None, "open: any key accepted (no key configured on the server)"
    err = r.body.get("error") if isinstance(r.body, dict) else None
    return r.status == 401 and isinstance(err, dict), f"HTTP {r.status} for a wrong key"


# ---------------------------------------------------------------- the requests

def _chat(model: str, content: str = "Say hello.", max_tokens: int = 16, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "seed": 42, **extra}


CITY = "Describe Paris as JSON with keys city and population."
Request = tuple[str, str, dict]  # method, path, payload


def requests_for(model: str) -> dict[str, list[Request]]:
    """Every check's request(s); `seed determinism` sends two."""
    post = lambda path, payload: ("POST", path, payload)  # noqa: E731
    chat = "/v1/chat/completions"
    seeded = _chat(model, "Tell me a short story.", 24, temperature=0.9, seed=1234)
    return {
        "models list": [("GET", "/v1/models", {})],
        "non-stream chat": [post(chat, _chat(model, "你好"))],
        "stream": [post(chat, _chat(model, "你好", stream=True))],
        "stream include_usage": [post(chat, _chat(model, stream=True, stream_options={"include_usage": True}))],
        "stop": [post(chat, _chat(model, "Count from 1 to 20, one number per line.", 40, stop=["\n"]))],
        "seed determinism": [post(chat, seeded), post(chat, seeded)],
        "n > 1": [post(chat, _chat(model, n=2, temperature=0.8))],
        "logprobs": [post(chat, _chat(model, max_tokens=4, logprobs=True, top_logprobs=2))],
        "max_completion_tokens": [post(chat, {k: v for k, v in _chat(model, "Tell me a long story.").items()
                                              if k != "max_tokens"} | {"max_completion_tokens": 5})],
        "json_object": [post(chat, _chat(model, CITY, 48, response_format={"type": "json_object"}))],
        "json_schema": [post(chat, _chat(model, CITY, 48, response_format={
            "type": "json_schema", "json_schema": {"name": "city", "strict": True, "schema": SCHEMA}}))],
        "tools": [post(chat, _chat(model, "What is the weather in Paris?", 48, tools=[TOOL]))],
        "tool_choice (forced)": [post(chat, _chat(model, "What is the weather in Paris?", 48, tools=[TOOL],
                                                  tool_choice={"type": "function",
                                                               "function": {"name": "get_weather"}}))],
        "reasoning fields": [post(chat, _chat(model, reasoning_effort="low"))],
        "/v1/responses": [post("/v1/responses", {"model": model, "input": "Say hello.", "max_output_tokens": 16,
                                                 "temperature": 0})],
        "/v1/embeddings": [post("/v1/embeddings", {"model": model, "input": "hello"})],
        "/v1/messages (Anthropic)": [post("/v1/messages", {"model": model, "max_tokens": 16, "temperature": 0,
                                                            "messages": [{"role": "user", "content": "Say hello."}]})],
        "error shape": [post(chat, {"model": model, "max_tokens": 8})],  # no messages
        "auth (wrong key)": [("POST+BADKEY", chat, _chat(model, max_tokens=2))],
    }


JUDGES: dict[str, Callable[..., tuple[bool | None, str]]] = {
    "models list": judge_models, "non-stream chat": judge_chat, "stream": judge_stream,
    "stream include_usage": judge_include_usage, "stop": judge_stop, "seed determinism": judge_same,
    "n > 1": judge_n2, "logprobs": judge_logprobs, "max_completion_tokens": judge_max_completion_tokens,
    "json_object": judge_json_object, "json_schema": judge_json_schema, "tools": judge_tools_accepted,
    "tool_choice (forced)": judge_tool_choice, "reasoning fields": judge_reasoning, "/v1/responses": judge_responses,
    "/v1/embeddings": judge_embeddings, "/v1/messages (Anthropic)": judge_messages, "error shape": judge_error_shape, "auth (wrong key)": judge_auth,
}


def judge(name: str, replies: list[Reply], model: str) -> Check:
    """Apply a check's judge to its recorded replies (pure: what the unit tests call)."""
    fn = JUDGES[name]
    ok, detail = fn(replies[0], model) if name == "models list" else fn(*replies)
    return Check(name, ok, detail)


# ---------------------------------------------------------------- I/O

def send(client: httpx.Client, base_url: str, req: Request, api_key: str) -> Reply:
    """One request; streams are read whole (the judge parses them), JSON bodies decoded when they are JSON."""
    method, path, payload = req
    key = "sk-wrong-key-for-the-probe" if method.endswith("+BADKEY") else api_key
    method = method.split("+")[0]
    t0 = time.perf_counter()
    for attempt in (1, 2):
        try:
            r = client.request(method, url_for(base_url, path), headers={"Authorization": f"Bearer {key}"},
                               json=payload if method == "POST" else None)
            break
        except httpx.RemoteProtocolError:
            # A pooled keep-alive connection the server had just closed: the request never reached it. Once.
            if attempt == 2:
                raise
    try:
        body = r.json() if "json" in r.headers.get("content-type", "") else None
    except ValueError:
        body = None
    return Reply(r.status_code, body, r.text if body is None else "", time.perf_counter() - t0)


def probe(base_url: str, model: str, *, api_key: str = PLACEHOLDER_KEY, only: list[str] | None = None,
          timeout: float = 60.0, record: dict | None = None) -> list[Check]:
    """Run the battery against a server (its root …:8080, or …:8080/v1). With `record`, the replies are stored into it."""
    checks = []
    with httpx.Client(timeout=timeout) as client:
        for name, reqs in requests_for(model).items():
            if only and name not in only:
                continue
            try:
                replies = [send(client, base_url, req, api_key) for req in reqs]
            except httpx.HTTPError as exc:
                checks.append(Check(name, False, f"{type(exc).__name__}: {exc}"[:90]))
                continue
            if record is not None:
                record[name] = [asdict(r) for r in replies]
            try:
                checks.append(judge(name, replies, model))
            except LabkitError as exc:  # e.g. a stream labkit.sse refuses: that is a finding, not a crash
                checks.append(Check(name, False, str(exc).splitlines()[0][:90]))
    return checks


def format_table(results: dict[str, list[Check]], *, details: bool = True) -> str:
    """Checks down, servers across: ✔ passed, ✘ failed, · informational; details below each row."""
    servers = list(results)
    names = [c.name for c in next(iter(results.values()))] if results else []
    width = max(len(n) for n in names) + 2 if names else 10
    lines = [f"{'check':<{width}}" + "".join(f"{s:^16}" for s in servers)]
    for i, name in enumerate(names):
        marks = [{True: "✔", False: "✘", None: "·"}[results[s][i].ok] for s in servers]
        lines.append(f"{name:<{width}}" + "".join(f"{m:^16}" for m in marks))
        if details:
            for s in servers:
                lines.append(f"{'':<4}{s}: {results[s][i].detail}")
    passed = {s: sum(c.ok is True for c in results[s]) for s in servers}
    lines.append("passed: " + ", ".join(f"{s} {passed[s]}/{sum(c.ok is not None for c in results[s])}"
                                        for s in servers))
    return "\n".join(lines)


# ---------------------------------------------------------------- command line

def add_cli(subparsers) -> None:
    """Register `labkit probe` on the main CLI's subparsers."""
    p = subparsers.add_parser("probe", help="OpenAI-API compatibility checks, ✔/✘ per server, side by side")
    _arguments(p)
    p.set_defaults(func=cmd_probe)


def _arguments(p) -> None:
    p.add_argument("urls", nargs="*", help="servers, e.g. http://127.0.0.1:8080 or its /v1 (default: the lab's servers)")
    p.add_argument("--model", action="append", help="model name per URL (default: the first of /v1/models)")
    p.add_argument("--api-key", default=PLACEHOLDER_KEY)
    p.add_argument("--only", action="append", help="run only this check (repeatable)")
    p.add_argument("--brief", action="store_true", help="marks only, no details")


def default_model(base_url: str, api_key: str = PLACEHOLDER_KEY) -> str:
    """What to probe when no model is named: the lab's model when the server lists it, else its first one."""
    from .models import model_alias
    url = url_for(base_url, "/v1/models")
    try:
        r = httpx.get(url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
        r.raise_for_status()
        ids = [m["id"] for m in r.json()["data"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise LabkitError(f"{url} did not list models ({exc}).",
                          fix="Is the server up (`labkit status`), and is this its address? "
                              "Name the model with --model.") from None
    if not ids:
        raise LabkitError(f"{url} lists no model.", fix="Load one, or name it with --model.")
    lab = model_alias()
    return next((i for i in ids if i in (lab, f"{lab}:latest")), ids[0])


def cmd_probe(args) -> int:
    from .servers import KINDS, port_of
    urls = args.urls or [f"http://127.0.0.1:{port_of(kind)}" for kind in KINDS]
    models = args.model or []
    results = {}
    for i, url in enumerate(urls):
        model = models[i] if i < len(models) else default_model(url, args.api_key)
        results[f"{url.split('//')[-1]}"] = probe(url, model, api_key=args.api_key, only=args.only)
    print(format_table(results, details=not args.brief))
    return 0 if all(c.ok is not False for checks in results.values() for c in checks) else 1


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys
    p = argparse.ArgumentParser(prog="labkit probe", description=__doc__.splitlines()[0])
    _arguments(p)
    args = p.parse_args(argv)
    try:
        return cmd_probe(args)
    except LabkitError as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
