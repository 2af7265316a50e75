"""Real tool calls from a tiny model: a llama-server profile with a tool-aware chat template, and the
assistant prefill that makes its grammar produce a call.

SmolLM2-135M never writes `<tool_call>` on its own. llama-server (--jinja) builds a grammar for
`tool_choice: "required"`, but in this build that grammar is `optional(content until <tool_call>) + calls`,
so the model keeps writing prose. When the request ends with the assistant prefill `<tool_call>\\n`, the server
feeds it to the grammar first, and what the model writes next can only be a call to one of your tools: the
server parses it and returns real `tool_calls`. Nothing here invents a response; `with_tool_call_prefill`
only changes the *request*, and shows you exactly how.

    server = tools_server()                          # llama-server on 8140 with data/templates/tools-*.jinja
    client = server.client(http_client=prefill_http_client())   # for frameworks that never send a prefill
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from .servers import Server
from .session import up

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['TEMPLATE', 'async_prefill_http_client', 'prefill_http_client', 'tool_calls_of', 'tools_server',
           'with_tool_call_prefill']

PORT = 8140
MODEL = "smollm2-tools"
PREFILL = "<tool_call>\n"
END_MARKER = "</tool_call>"
TEMPLATE = Path(__file__).resolve().parents[1] / "data" / "templates" / "tools-smollm2-chatml.jinja"


def tools_server(*, port: int = PORT, model: str = MODEL, template: str | Path = TEMPLATE, **options) -> Server:
    """llama-server with a chat template that declares tools, so --jinja parses `<tool_call>` into tool_calls."""
    template = Path(template)
    if not template.is_file():
        from .errors import LabkitError
        raise LabkitError(f"Chat template {template} is missing.",
                          fix="Run from a checkout of the lab (it ships data/templates/), or pass template=<path>.")
    extra = ["--chat-template-file", str(template), *options.pop("extra_args", ())]
    options.setdefault("parallel", 2)
    return up("llamacpp", port=port, model=model, extra_args=extra, **options)


def needs_prefill(body: dict[str, Any]) -> bool:
    """A call is wanted now: tools are offered, not switched off, and the last turn is the user's."""
    messages = body.get("messages") or []
    return (bool(body.get("tools")) and body.get("tool_choice") != "none"
            and bool(messages) and messages[-1].get("role") == "user")


def with_tool_call_prefill(body: dict[str, Any]) -> dict[str, Any]:
    """The same chat request, made to yield a real tool call from a model too small to start one itself."""
    if not needs_prefill(body):
        return body
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    # This build's grammar repeats calls even with parallel_tool_calls=false: stop after the first one.
    return {**body, "tool_choice": "required", "parallel_tool_calls": False, "stop": [*stop, END_MARKER],
            "messages": [*body["messages"], {"role": "assistant", "content": PREFILL}]}


def _rewrite(request: httpx.Request) -> httpx.Request:
    if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
        return request
    body = json.loads(request.content or b"{}")
    new = with_tool_call_prefill(body)
    if new is body:
        return request
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    return httpx.Request(request.method, request.url, headers=headers, json=new, extensions=request.extensions)


class PrefillTransport(httpx.HTTPTransport):
    """Sends chat requests through `with_tool_call_prefill`; responses come back untouched."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return super().handle_request(_rewrite(request))


class AsyncPrefillTransport(httpx.AsyncHTTPTransport):
    """The async twin of `PrefillTransport` (AsyncOpenAI, AutoGen, the Agents SDK)."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await super().handle_async_request(_rewrite(request))


def prefill_http_client(timeout: float = 300) -> httpx.Client:
    """An httpx client for `openai.OpenAI(http_client=...)` that adds the tool-call prefill."""
    return httpx.Client(transport=PrefillTransport(), timeout=timeout)


def async_prefill_http_client(timeout: float = 300) -> httpx.AsyncClient:
    """An httpx client for `AsyncOpenAI(http_client=...)` that adds the tool-call prefill."""
    return httpx.AsyncClient(transport=AsyncPrefillTransport(), timeout=timeout)


def tool_calls_of(response: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, parsed arguments) for each tool call in a chat completion, so lessons assert on real objects."""
    message = response["choices"][0]["message"]
    return [(c["function"]["name"], json.loads(c["function"]["arguments"] or "{}"))
            for c in message.get("tool_calls") or []]
