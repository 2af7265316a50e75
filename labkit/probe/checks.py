"""The probe's checks, pure: what each one sends (`CHECKS`: name, requests, judge) and how its reply is judged.

A judge answers True (✔), False (✘) or None (· — informational: the server is allowed to do either, the detail
says which). A ✘ that a server's kind gives by design is a known difference (≠, `KNOWN`): the check still failed
(`ok` is False), and `Check.known` says why it is not a bug. The kind comes from the first row, "server kind"
(GET /api/version answers on Ollama, GET /props on llama-server). Unit-tested on replies recorded from the real
servers (data/bench/probe_*.json).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable

from ..models import same_model
from ..sse import REASONING_FIELDS, Assembled, assemble, iter_chunks, iter_events
from ..tables import KNOWN as KNOWN_MARK
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
    known: str = ""  # why this server fails the check by design (a known difference, ≠); "" when it is not one

    @property
    def mark(self) -> str:
        """✔ passed, ✘ failed, · informational, ≠ failed by the server's design."""
        return KNOWN_MARK if self.known and self.ok is False else MARK[self.ok]


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


def sse_events(text: str) -> list[tuple[str, object]]:
    """(type, data) of each event of a recorded SSE body (Responses, Messages): the type is the data's "type" (what
    the SDKs read), else the event's name; data is decoded JSON. A `[DONE]` is left out."""
    events = []
    for ev in iter_events([text.encode()]):
        if ev.data == "[DONE]":
            continue
        try:
            data = json.loads(ev.data)
        except ValueError:
            data = ev.data
        events.append(((data.get("type") if isinstance(data, dict) else None) or ev.event, data))
    return events


_JSON_TYPES: dict[str, Callable[[object], bool]] = {
    "object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool), "null": lambda v: v is None,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}


def schema_errors(value: object, schema: dict, at: str = "$") -> list[str]:
    """Why `value` is not valid against a JSON schema's basic keywords (type, enum, properties, required,
    additionalProperties, items): enough for the probe's SCHEMA without a dependency; [] when it is valid."""
    types = schema.get("type")
    if types is not None:
        types = types if isinstance(types, list) else [types]
        if not any(_JSON_TYPES[t](value) for t in types):
            return [f"{at} is {type(value).__name__}, not {'/'.join(types)}"]
    errors = [f"{at} not in enum"] if "enum" in schema and value not in schema["enum"] else []
    if isinstance(value, dict):
        props, extra = schema.get("properties") or {}, schema.get("additionalProperties", True)
        errors += [f"{at}.{k} missing (required)" for k in schema.get("required", []) if k not in value]
        for k, v in value.items():
            if k in props:
                errors += schema_errors(v, props[k], f"{at}.{k}")
            elif extra is False:
                errors.append(f"{at}.{k} not allowed (additionalProperties)")
            elif isinstance(extra, dict):
                errors += schema_errors(v, extra, f"{at}.{k}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            errors += schema_errors(v, schema["items"], f"{at}[{i}]")
    return errors


# ---------------------------------------------------------------- judges: HttpReply(s) → (ok, detail)

def judge_models(r: HttpReply, model: str) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    ids = [m.get("id") for m in (r.body or {}).get("data", [])]
    found = next((i for i in ids if same_model(model, i)), None)
    ok = r.body.get("object") == "list" and found is not None
    return ok, f"{found!r} among {len(ids)} id(s)" if found else f"no {model!r} among ids {ids[:3]}"


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
    """`stream_options.include_usage`: exactly one chunk carries usage, the last one before [DONE], with
    `choices` empty (OpenAI's rule; the other chunks may say `"usage": null`)."""
    if (bad := _status_fail(r)):
        return bad
    chunks, done = sse_chunks(r.text)
    with_usage = [i for i, c in enumerate(chunks) if c.get("usage") is not None]
    last = chunks[-1] if chunks else {}
    problems = [f"{len(with_usage)} chunks carry usage"] if len(with_usage) != 1 else \
        [f"usage in chunk {with_usage[0] + 1} of {len(chunks)}, not the last"] if with_usage[0] != len(chunks) - 1 \
        else []
    if last.get("choices") != []:
        problems.append(f"last chunk's choices={last.get('choices')!r}"[:50])
    if not done:
        problems.append("no [DONE]")
    extra = " + timings" if last.get("timings") else ""
    return not problems, "; ".join(problems) or f"one usage chunk, last before [DONE], choices=[]{extra}"


def judge_stream_equals(plain: HttpReply, streamed: HttpReply) -> tuple[bool, str]:
    """At temperature 0 and a seed, the streamed text (and finish_reason) is the non-streamed one."""
    if (bad := _status_fail(plain) or _status_fail(streamed)):
        return bad
    total = assemble(sse_chunks(streamed.text)[0])
    text, fr = _content(plain), _choice(plain).get("finish_reason")
    if not text:
        return False, f"the non-streamed reply has no text (finish_reason={fr})"
    if (total.text, total.finish_reason) != (text, fr):
        return False, f"{text[:25]!r} ({fr}) ≠ streamed {total.text[:25]!r} ({total.finish_reason})"
    return True, f"identical: {text[:30]!r}, finish_reason={fr}"


def judge_after_malformed(bad: HttpReply, after: HttpReply) -> tuple[bool, str]:
    """A body that is not JSON gets a 4xx, and the next request is served as usual (200 with a completion)."""
    first = f"HTTP {bad.status} for a body that is not JSON"
    if not 400 <= bad.status < 500:
        return False, first + " (want 4xx)"
    if (fail := _status_fail(after)):
        return False, f"{first}, then {fail[1]}"[:120]
    ok, detail = judge_chat(after)
    return ok, f"{first}, then 200: {detail}"


STOPS = ("\n", ".", ":")  # several, so that any model meets one within a few tokens


def judge_stop(r: HttpReply) -> tuple[bool, str]:
    """The reply ends before the first stop string, which is not in the text, with finish_reason stop."""
    if (bad := _status_fail(r)):
        return bad
    text, fr = _content(r), _choice(r).get("finish_reason")
    return (not any(s in text for s in STOPS) and fr == "stop"), f"finish_reason={fr}, text={text[:30]!r}"


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


TOP_LOGPROBS = 3


def _logprob_problem(i: int, tok: dict) -> str | None:
    """What breaks the invariants at one token: its top_logprobs (as many as asked) sorted by logprob descending,
    every logprob ≤ 0 (probability ≤ 1), the chosen token among its top_logprobs with the same logprob."""
    tops = tok.get("top_logprobs") or []
    lps = [tok.get("logprob"), *(t.get("logprob") for t in tops)]
    if len(tops) != TOP_LOGPROBS:
        return f"token {i}: {len(tops)} top_logprobs for top_logprobs={TOP_LOGPROBS}"
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in lps):
        return f"token {i}: a logprob is not a number"
    if max(lps) > 1e-6:
        return f"token {i}: logprob {max(lps):.3g} > 0 (probability > 1)"
    if lps[1:] != sorted(lps[1:], reverse=True):
        return f"token {i}: top_logprobs not sorted by logprob"

    def same(t: dict) -> bool:
        return t.get("id") == tok.get("id") if "id" in t and "id" in tok else t.get("token") == tok.get("token")
    mine = next((t for t in tops if same(t)), None)
    if mine is None:
        return f"token {i} {tok.get('token')!r} not among its top_logprobs"
    if abs(mine["logprob"] - tok["logprob"]) > 1e-3:
        return f"token {i}: logprob {tok['logprob']:.3f} ≠ {mine['logprob']:.3f} in its top_logprobs"
    return None


def judge_logprobs(r: HttpReply) -> tuple[bool, str]:
    if (bad := _status_fail(r)):
        return bad
    content = (_choice(r).get("logprobs") or {}).get("content") or []
    if not content:
        return False, "no logprobs.content"
    problem = next((p for i, tok in enumerate(content) if (p := _logprob_problem(i, tok))), None)
    first = content[0]
    return problem is None, problem or f"{len(content)} tokens, sorted, chosen among top {TOP_LOGPROBS}, all ≤ 0; " \
                                       f"first={first.get('token')!r} {first.get('logprob'):.3f}"


def judge_max_completion_tokens(r: HttpReply) -> tuple[bool, str]:
    """At most 5 tokens, finish_reason length. The request streams, so the probe can hang up on a server that
    ignores the limit (it reads STREAM_CAP events); a non-streamed reply is judged the same way."""
    if (bad := _status_fail(r)):
        return bad
    if r.body is None:  # streamed
        chunks, done = sse_chunks(r.text)
        total = assemble(chunks)
        used, fr = total.n_tokens, total.finish_reason
        cut = "" if done else f" (still going: read {total.n_deltas} tokens, then hung up)"
    else:
        used, fr, cut = (r.body.get("usage") or {}).get("completion_tokens"), _choice(r).get("finish_reason"), ""
    return (used is not None and used <= 5 and fr == "length"), f"completion_tokens={used}, finish_reason={fr}{cut}"


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
    """The reply parses and is valid against SCHEMA (types, required, additionalProperties)."""
    obj, verdict = _json_content(r)
    if verdict:
        return verdict
    errors = schema_errors(obj, SCHEMA)
    return not errors, ("; ".join(errors) if errors else f"valid: {obj}")[:90]


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


def judge_tool_choice_none(r: HttpReply) -> tuple[bool, str]:
    """`tool_choice: "none"` with tools given: no tool call comes back."""
    if (bad := _status_fail(r)):
        return bad
    calls = (_choice(r).get("message") or {}).get("tool_calls") or []
    fr = _choice(r).get("finish_reason")
    return (not calls and fr != "tool_calls"), f"{len(calls)} tool call(s), finish_reason={fr}, " \
                                              f"text={_content(r)[:20]!r}"


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


_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def judge_responses_stream(r: HttpReply) -> tuple[bool, str]:
    """`/v1/responses` streamed: response.created first, one terminal event last (response.completed, or
    .incomplete when cut), output_text deltas in between that add up to output_text.done's text, and every
    output_text part with its `annotations` list (a client that reads the events into typed objects needs it)."""
    if (bad := _status_fail(r)):
        return bad
    events = sse_events(r.text)
    names = [n for n, _ in events]
    deltas = [d.get("delta") or "" for n, d in events if n == "response.output_text.delta" and isinstance(d, dict)]
    done = [d.get("text") for n, d in events if n == "response.output_text.done" and isinstance(d, dict)]
    problems = []
    if not names or names[0] != "response.created" or names.count("response.created") != 1:
        problems.append(f"first event {names[0] if names else None}, want response.created once")
    if not names or names[-1] not in _TERMINAL or sum(n in _TERMINAL for n in names) != 1:
        problems.append(f"last event {names[-1] if names else None}, want response.completed once")
    if not deltas:
        problems.append("no response.output_text.delta")
    elif done and "".join(deltas) != done[-1]:
        problems.append("deltas do not add up to output_text.done")
    bare = [n.removeprefix("response.") for n, d in events if isinstance(d, dict) and isinstance(d.get("part"), dict)
            and d["part"].get("type") == "output_text" and not isinstance(d["part"].get("annotations"), list)]
    if bare:  # the spec's output_text part always has `annotations`; typed clients (Agent Framework) fail without
        problems.append(f"output_text part without annotations in {', '.join(dict.fromkeys(bare))}")
    last = names[-1] if names else ""
    return not problems, ("; ".join(problems)
                          or f"created, {len(deltas)} output_text deltas, {last} ({len(names)} events)")


_MESSAGES_LETTER = {"message_start": "S", "content_block_start": "B", "content_block_delta": "D",
                    "content_block_stop": "E", "message_delta": "M", "message_stop": "X"}


def judge_messages_stream(r: HttpReply) -> tuple[bool, str]:
    """`/v1/messages` streamed, Anthropic's order: message_start, then per block content_block_start,
    content_block_delta…, content_block_stop, then message_delta (with the stop_reason) and message_stop (ping
    events may come anywhere)."""
    if (bad := _status_fail(r)):
        return bad
    events = [(n, d) for n, d in sse_events(r.text) if n != "ping"]
    order = "".join(_MESSAGES_LETTER.get(n, "?") for n, _ in events)
    stop = next((((d.get("delta") or {}).get("stop_reason")) for n, d in events
                 if n == "message_delta" and isinstance(d, dict)), None)
    if not re.fullmatch(r"S(BD*E)+MX", order) or "D" not in order:
        names = " ".join(n for n, _ in events)
        return False, f"order: {names}"[:110]
    if not stop:
        return False, "message_delta without a stop_reason"
    return True, f"start, {order.count('B')} block(s), {order.count('D')} deltas, stop ({stop})"


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


def server_kind(version: HttpReply, props: HttpReply) -> str | None:
    """Which server answered, from GET /api/version (Ollama) and GET /props (llama-server): "ollama", "llamacpp",
    or "llamacpp:no-tools" when llama-server's chat template has no tools (it then leaves them out of the
    prompt); None for another server (vLLM, a proxy…)."""
    if version.status == 200 and isinstance(version.body, dict) and "version" in version.body:
        return "ollama"
    if props.status == 200 and isinstance(props.body, dict) and "default_generation_settings" in props.body:
        caps = props.body.get("chat_template_caps") or {}
        return "llamacpp" + (NO_TOOLS if caps.get("supports_tools") is False else "")
    return None


def judge_server(version: HttpReply, props: HttpReply) -> tuple[None, str]:
    kind = server_kind(version, props)
    if kind == "ollama":
        return None, f"Ollama {version.body.get('version')} (GET /api/version)"
    if kind:
        tools = "; its chat template has no tools" if kind.endswith(NO_TOOLS) else ""
        return None, f"llama.cpp {props.body.get('build_info', '')} (GET /props){tools}"
    return None, "neither Ollama (/api/version) nor llama-server (/props): no known differences applied"


def judge_auth(r: HttpReply) -> tuple[bool | None, str]:
    """A wrong key: 401 with an error object (server has --api-key) or accepted (an open local server)."""
    if r.status == 200:
        return None, "open: any key accepted (no key configured on the server)"
    err = r.body.get("error") if isinstance(r.body, dict) else None
    return r.status == 401 and isinstance(err, dict), f"HTTP {r.status} for a wrong key"


# ---------------------------------------------------------------- known differences: ✘ by a server's design (≠)

NO_TOOLS = ":no-tools"  # a kind's suffix: llama-server whose chat template has no tools


@dataclass(frozen=True)
class Known:
    """Why a server kind fails a check by design. `when`: only a failure whose detail contains it is this one
    (so an unrelated failure, e.g. an HTTP 500, stays a ✘)."""

    reason: str
    when: str = ""


_REFUSES_TOOLS = Known("Ollama refuses tools for a model whose template has none (/api/show capabilities)",
                       "does not support tools")
_IGNORES_TOOL_CHOICE = Known("Ollama ignores tool_choice (not among the fields its OpenAI API supports)")
_DROPS_TOOLS = Known("llama.cpp puts tools into the prompt through the model's chat template; this one has none "
                     "(/props chat_template_caps), so they are left out and no call can come back", "no tool_calls")

KNOWN: dict[str, dict[str, tuple[Known, ...]]] = {
    "ollama": {
        "n > 1": (Known("Ollama has no `n` (not among the fields its OpenAI API supports): one choice",
                        "1 choice(s)"),),
        "tools": (_REFUSES_TOOLS,),
        "tool_choice (forced)": (_REFUSES_TOOLS, _IGNORES_TOOL_CHOICE),
        "tool_choice required": (_REFUSES_TOOLS, _IGNORES_TOOL_CHOICE),
        "tool_choice none": (_REFUSES_TOOLS, _IGNORES_TOOL_CHOICE),
        "reasoning fields": (Known("Ollama refuses reasoning_effort for a model that does not think",
                                   "does not support thinking"),),
    },
    "llamacpp": {
        "/v1/embeddings": (Known("llama-server serves embeddings only when started with --embeddings", "501"),),
    },
    "llamacpp" + NO_TOOLS: {
        "tool_choice (forced)": (_DROPS_TOOLS,),
        "tool_choice required": (_DROPS_TOOLS,),
    },
}


def known_difference(kind: str | None, name: str, detail: str) -> str:
    """The reason a failed check is a known difference of this server kind, or ""."""
    base = (kind or "").split(":")[0]
    for k in (*KNOWN.get(kind or "", {}).get(name, ()), *(KNOWN.get(base, {}).get(name, ()) if base != kind else ())):
        if k.when in detail:
            return k.reason
    return ""


# ---------------------------------------------------------------- the checks: requests and judge, one row each

def _chat(model: str, content: str = "Say hello.", max_tokens: int = 8, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "seed": 42, **extra}


CITY = "Describe Paris as JSON with keys city and population."
CHAT = "/v1/chat/completions"
# method (POST+BADKEY: a wrong key; POST+RAW: the str payload as the body, as it is), path, payload
Request = tuple[str, str, "dict | str"]
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

_SAY = [{"role": "user", "content": "Say hello."}]

CHECKS: list[CheckSpec] = [
    CheckSpec("server kind", lambda m: [("GET", "/api/version", {}), ("GET", "/props", {})],
              lambda rs, m: judge_server(*rs)),  # the kind decides the known differences (≠) of the rows below
    CheckSpec("models list", lambda m: [("GET", "/v1/models", {})], lambda rs, m: judge_models(rs[0], m)),
    CheckSpec("non-stream chat", _post(lambda m: _chat(m, "你好")), _one(judge_chat)),
    CheckSpec("stream", _post(lambda m: _chat(m, "你好", stream=True)), _one(judge_stream)),
    CheckSpec("stream = non-stream",  # the same request at temperature 0 and a seed, streamed and not
              lambda m: [("POST", CHAT, _chat(m, max_tokens=6)), ("POST", CHAT, _chat(m, max_tokens=6, stream=True))],
              lambda rs, m: judge_stream_equals(*rs)),
    CheckSpec("stream include_usage",
              _post(lambda m: _chat(m, max_tokens=4, stream=True, stream_options={"include_usage": True})),
              _one(judge_include_usage)),
    CheckSpec("stop", _post(lambda m: _chat(m, "Count from 1 to 20, one number per line.", 16, stop=list(STOPS))),
              _one(judge_stop)),
    CheckSpec("seed determinism",  # the same seeded request twice
              _post(lambda m: _chat(m, "Tell me a short story.", 8, temperature=0.9, seed=1234), times=2),
              lambda rs, m: judge_same(*rs)),
    CheckSpec("n > 1", _post(lambda m: _chat(m, max_tokens=4, n=2, temperature=0.8)), _one(judge_n2)),
    CheckSpec("logprobs", _post(lambda m: _chat(m, max_tokens=3, logprobs=True, top_logprobs=TOP_LOGPROBS)),
              _one(judge_logprobs)),
    CheckSpec("max_completion_tokens",  # streamed, so that a server ignoring it is cut off (runner.STREAM_CAP)
              _post(lambda m: {k: v for k, v in _chat(m, "Tell me a long story.").items() if k != "max_tokens"}
                    | {"max_completion_tokens": 5, "stream": True, "stream_options": {"include_usage": True}}),
              _one(judge_max_completion_tokens)),
    CheckSpec("json_object", _post(lambda m: _chat(m, CITY, 48, response_format={"type": "json_object"})),
              _one(judge_json_object)),
    CheckSpec("json_schema", _post(lambda m: _chat(m, CITY, 48, response_format=_STRICT)), _one(judge_json_schema)),
    CheckSpec("tools", _post(lambda m: _chat(m, _WEATHER, 8, tools=[TOOL])), _one(judge_tools_accepted)),
    CheckSpec("tool_choice (forced)", _post(lambda m: _chat(m, _WEATHER, 32, tools=[TOOL], tool_choice=_FORCED)),
              _one(judge_tool_choice)),
    CheckSpec("tool_choice required", _post(lambda m: _chat(m, _WEATHER, 32, tools=[TOOL], tool_choice="required")),
              _one(judge_tool_choice)),
    CheckSpec("tool_choice none", _post(lambda m: _chat(m, _WEATHER, 6, tools=[TOOL], tool_choice="none")),
              _one(judge_tool_choice_none)),
    CheckSpec("reasoning fields", _post(lambda m: _chat(m, max_tokens=4, reasoning_effort="low")),
              _one(judge_reasoning)),
    CheckSpec("/v1/responses", _post(lambda m: {"model": m, "input": "Say hello.", "max_output_tokens": 4,
                                                "temperature": 0}, "/v1/responses"), _one(judge_responses)),
    CheckSpec("/v1/responses stream", _post(lambda m: {"model": m, "input": "Say hello.", "max_output_tokens": 4,
                                                       "temperature": 0, "stream": True}, "/v1/responses"),
              _one(judge_responses_stream)),
    CheckSpec("/v1/embeddings", _post(lambda m: {"model": m, "input": "hello"}, "/v1/embeddings"),
              _one(judge_embeddings)),
    CheckSpec("/v1/messages (Anthropic)", _post(lambda m: {"model": m, "max_tokens": 4, "temperature": 0,
                                                           "messages": _SAY}, "/v1/messages"), _one(judge_messages)),
    CheckSpec("/v1/messages stream", _post(lambda m: {"model": m, "max_tokens": 4, "temperature": 0, "stream": True,
                                                      "messages": _SAY}, "/v1/messages"), _one(judge_messages_stream)),
    CheckSpec("error shape", _post(lambda m: {"model": m, "max_tokens": 8}), _one(judge_error_shape)),  # no messages
    CheckSpec("alive after bad JSON",  # a body that is not JSON, then a normal chat
              lambda m: [("POST+RAW", CHAT, '{"model": "' + m + '", "messages": [{'),
                         ("POST", CHAT, _chat(m, max_tokens=2))],
              lambda rs, m: judge_after_malformed(*rs)),
    CheckSpec("auth (wrong key)", lambda m: [("POST+BADKEY", CHAT, _chat(m, max_tokens=2))], _one(judge_auth)),
]
BY_NAME = {c.name: c for c in CHECKS}


def judge(name: str, replies: list[HttpReply], model: str, kind: str | None = None) -> Check:
    """Apply a check's judge to its recorded replies (pure: what the unit tests call). With the server's `kind`
    (`server_kind`), a failure that kind gives by design comes back as a known difference (`Check.known`)."""
    ok, detail = BY_NAME[name].judge(replies, model)
    return Check(name, ok, detail, known_difference(kind, name, detail) if ok is False else "")


WIDTH = 100  # JupyterLab's output area: the table is drawn this wide


def format_table(results: dict[str, list[Check]], *, details: bool = True, width: int = WIDTH) -> str:
    """Checks down, servers across: ✔ passed, ✘ failed, · informational, ≠ failed by the server's design; the
    details below (a known difference's reason after its detail)."""
    servers = list(results)
    names = [c.name for c in next(iter(results.values()))] if results else []
    marks = table(["check", *servers], ([name, *(results[s][i].mark for s in servers)]
                                        for i, name in enumerate(names)))
    for col in marks.columns[1:]:
        col.justify = "center"

    def summary(checks: list[Check]) -> str:
        known = sum(bool(c.known) and c.ok is False for c in checks)
        return (f"{sum(c.ok is True for c in checks)}/{sum(c.ok is not None for c in checks)}"
                + (f" ({known} {KNOWN_MARK} by design)" if known else ""))
    passed = "passed: " + ", ".join(f"{s} {summary(results[s])}" for s in servers)
    parts: list[object] = [marks]
    if details:
        def detail(c: Check) -> str:
            return f"{c.detail} — {KNOWN_MARK} {c.known}" if c.known and c.ok is False else c.detail
        parts.append(table(["check", "server", "detail"], ([name if j == 0 else "", s, detail(results[s][i])]
                                                          for i, name in enumerate(names)
                                                          for j, s in enumerate(servers))))
    return render(*parts, passed, width=width)
