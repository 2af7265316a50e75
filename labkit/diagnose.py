"""Turn what a server sent back (status + body) into what happened and what to do: the lab's error explainer.

    r = httpx.post(...)
    if r.status_code != 200:
        print(labkit.diagnose.explain(r.status_code, r.text))

Pure functions over recorded bodies (data/errors/) — no network here. llama-server answers errors as
`{"error": {"code", "message", "type"}}`, Ollama's native API as `{"error": "..."}` and its /v1 routes as
`{"error": {"message", "type"}}`; nginx and other proxies answer HTML. All of them end up in one `Diagnosis`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import LabkitError

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['explain']


@dataclass(frozen=True)
class Diagnosis:
    """One failed request, explained: `kind` is a stable short name tests and notebooks can assert on."""

    status: int
    kind: str
    message: str  # what the server said, verbatim (first line)
    fix: str

    def __str__(self) -> str:
        return f"HTTP {self.status} [{self.kind}]: {self.message}\nFix: {self.fix}"


class RequestError(LabkitError):
    """The server refused a request; `.diagnosis` says why and what to change."""

    def __init__(self, diagnosis: Diagnosis) -> None:
        self.diagnosis = diagnosis
        super().__init__(f"HTTP {diagnosis.status} [{diagnosis.kind}]: {diagnosis.message}", fix=diagnosis.fix)


def server_message(body: str | bytes | Mapping[str, Any] | None) -> tuple[str, str]:
    """The (message, type) a server put in an error body, whatever its dialect; HTML pages give their title."""
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", "replace")
    data: Any = body
    if isinstance(body, str):
        text = body.strip()
        try:
            data = json.loads(text) if text[:1] in "{[" else text
        except ValueError:
            data = text
    if isinstance(data, Mapping):
        err = data.get("error", data)
        if isinstance(err, Mapping):
            return str(err.get("message") or err.get("detail") or json.dumps(dict(err))), str(err.get("type") or "")
        return str(err), ""
    text = str(data or "")
    title = re.search(r"<title>(.*?)</title>", text, re.I | re.S) or re.search(r"<h1>(.*?)</h1>", text, re.I | re.S)
    if title:
        return title.group(1).strip(), "html"
    return (text.splitlines() or [""])[0][:500], ""


# (kind, status or None for any, regex on the message, fix). First match wins; order from specific to general.
_RULES: list[tuple[str, int | None, str, str]] = [
    ("invalid_json", 400, r"parse error|invalid character|unexpected end of JSON|cannot unmarshal .*JSON|"
                          r"unexpected EOF|syntax error",
     "The body is not valid JSON. Build it with json.dumps() (or httpx's json=) instead of pasting strings; "
     "in a shell, quote it with single quotes and check the brackets."),
    ("context_exceeded", None, r"exceeds the available context|context length|context size|too many tokens",
     "The prompt is longer than the context window (per slot: ctx_size / parallel). Shorten the prompt or "
     "history, or start the server with a larger window: labkit.up('llamacpp', ctx_size=8192, parallel=1)."),
    ("wrong_type", 400, r"type must be|cannot unmarshal|Expected '?\w+'? to be|must be an? (array|string|number|"
                        r"object)|invalid type|expected (an? )?(array|string|number|object)",
     "A field has the wrong JSON type: messages is a list of {role, content} objects, max_tokens an integer, "
     "temperature a number. The field is named in the message."),
    ("max_tokens_range", 400, r"max_tokens.*(must be|between|invalid)|max_tokens.*negative|num_predict",
     "max_tokens must be a positive integer that fits the context (e.g. 256); -1 means 'until the context "
     "is full' on llama-server."),
    ("invalid_role", 400, r"role", "Use one of the roles the chat template knows: system, user, assistant "
                                   "(tool for tool results)."),
    ("empty_messages", 400, r"messages.*(empty|required|at least)|no messages|\[\] is too short",
     "Send at least one message: [{'role': 'user', 'content': '...'}]."),
    ("model_not_found", 404, r"model .*not found|not found.*model|no such model",
     "Use a model the server has: GET /v1/models lists them (server.model in the lab); on Ollama "
     "`ollama list`, then `ollama pull`/`ollama create` if it is missing."),
    ("unauthorized", 401, r"",
     "The server (or the proxy in front of it) checks an API key: send `Authorization: Bearer <key>` — set "
     "OPENAI_API_KEY or pass api_key=server.key. A placeholder key only works when the server checks none."),
    ("forbidden", 403, r"", "The server or proxy refuses this client (origin/CORS or IP rule): check its config."),
    ("body_too_large", 413, r"",
     "The request body is over the server's or proxy's limit (llama-server: 100 MiB; nginx: "
     "client_max_body_size). Send less: trim history, or raise the limit in the proxy config."),
    ("not_found", 404, r"", "Wrong URL: OpenAI clients want base_url ending in /v1 (server.openai_base_url); "
                            "the chat route is /v1/chat/completions."),
    ("method_not_allowed", 405, r"", "Wrong HTTP method: chat completions are POST."),
    ("loading", 503, r"loading|unavailable",
     "The server is still loading the model. Wait for GET /health to return 200 (labkit.up() waits for you)."),
    ("bad_gateway", 502, r"",
     "A proxy could not reach the model server behind it: is it running? labkit.up() starts it; check the "
     "proxy's upstream port."),
    ("gateway_timeout", 504, r"",
     "The proxy gave up waiting: raise proxy_read_timeout, or stream (stream=True) so bytes keep flowing."),
    ("server_error", 500, r"",
     "The server failed while handling the request: read its log (server.log_tail()); a crashed server is "
     "restarted by the next labkit.up()."),
    ("bad_request", 400, r"", "The server rejected the request; the message above names the field to fix."),
]


def explain(status: int, body: str | bytes | Mapping[str, Any] | None = None) -> Diagnosis | None:
    """What a failed reply means and what to do about it; None for a success (status < 400)."""
    if status < 400:
        return None
    message, type_ = server_message(body)
    haystack = f"{message} {type_}"
    if type_ == "exceed_context_size_error":
        kind, fix = next((k, f) for k, _s, _p, f in _RULES if k == "context_exceeded")
        return Diagnosis(status, kind, message, fix)
    for kind, want, pattern, fix in _RULES:
        if (want is None or want == status) and re.search(pattern, haystack, re.I):
            return Diagnosis(status, kind, message, fix)
    return Diagnosis(status, "http_error", message or f"HTTP {status}",
                     "Read the server log (server.log_tail()) for the cause.")


def check(response: Any) -> Any:
    """Raise RequestError with the explanation when an httpx/requests response failed; else return it."""
    status = int(getattr(response, "status_code", 0))
    if status >= 400:
        try:
            body = response.text
        except Exception:  # noqa: BLE001 - a streamed body not read yet
            body = response.read() if hasattr(response, "read") else ""
        raise RequestError(explain(status, body))  # type: ignore[arg-type]
    return response


def explain_exception(exc: BaseException) -> Diagnosis:
    """The same explanation for an exception from the openai client or httpx (status errors and dead servers)."""
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if status is None and response is not None:
        status = getattr(response, "status_code", None)
    if status:
        body = getattr(exc, "body", None)
        if body is None and response is not None:
            try:
                body = response.text
            except Exception:  # noqa: BLE001
                body = ""
        if isinstance(body, Mapping) and "error" not in body:
            body = {"error": body}
        return explain(int(status), body) or Diagnosis(int(status), "ok", str(exc), "")
    name = type(exc).__name__
    text = f"{name}: {exc}"
    if re.search(r"Connect|refused|RemoteProtocol|ReadError|incomplete|peer closed|Disconnected", text, re.I):
        return Diagnosis(0, "connection_lost", text,
                         "The server is not running or died mid-reply. labkit.up(...) restarts a server this "
                         "kernel started; then send the request again. server.log_tail() shows why it stopped.")
    if re.search(r"Timeout", text, re.I):
        return Diagnosis(0, "timeout", text,
                         "No answer in time: the server is busy or loading. Raise the client timeout, lower "
                         "max_tokens, or stream so you see progress.")
    return Diagnosis(0, "client_error", text, "Not an HTTP error; read the traceback.")


def surprises(request: Mapping[str, Any], reply: Mapping[str, Any], *, num_ctx: int | None = None) -> list[str]:
    """Requests that 'worked' but not as meant (a 200 is not a yes): the silent traps, as warnings."""
    notes: list[str] = []
    asked, got = request.get("model"), reply.get("model")
    if asked and got and asked != got and not str(got).startswith(f"{asked}:"):
        notes.append(f"model_substituted: asked for '{asked}', the server answered with '{got}' — llama-server "
                     "serves its one model under any name; use the id from GET /v1/models.")
    messages = request.get("messages")
    if isinstance(messages, list) and not messages:
        notes.append("empty_messages: no messages were sent, yet the server generated text from an empty prompt.")
    known = {"system", "user", "assistant", "tool", "developer", "function"}
    odd = sorted({m.get("role") for m in messages or [] if isinstance(m, Mapping)} - known)
    if odd:
        notes.append(f"unknown_role: role(s) {odd} were accepted and passed to the chat template as-is.")
    choices = reply.get("choices") or []
    if choices and choices[0].get("finish_reason") == "length":
        notes.append("truncated: finish_reason is 'length' — the reply stopped at max_tokens (or the context "
                     "end); raise max_tokens if you need the rest.")
    usage = reply.get("usage") or {}
    if num_ctx and usage.get("prompt_tokens", 0) >= num_ctx - 8:
        notes.append("prompt_truncated: prompt_tokens reached the context size — Ollama silently dropped the "
                     "start of the prompt.")
    return notes
