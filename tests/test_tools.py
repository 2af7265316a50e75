"""labkit.tools: the request rewrite and the tool-call parsing, on a response recorded from the real server."""
import json
from pathlib import Path

import httpx

from labkit import tools

RECORDED = Path(__file__).resolve().parents[1] / "data" / "templates" / "tools-recorded-call.json"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_prefill_added_when_the_user_spoke_last():
    body = tools.with_tool_call_prefill({"messages": ASK, "tools": TOOLS, "stop": "\n\n"})
    assert body["messages"][-1] == {"role": "assistant", "content": tools.PREFILL}
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert body["stop"] == ["\n\n", tools.END_MARKER]


def test_no_prefill_after_a_tool_result_without_tools_or_with_none():
    after_tool = ASK + [{"role": "assistant", "tool_calls": []}, {"role": "tool", "content": "18 C"}]
    for body in ({"messages": after_tool, "tools": TOOLS}, {"messages": ASK},
                 {"messages": ASK, "tools": TOOLS, "tool_choice": "none"}):
        assert tools.with_tool_call_prefill(body) is body


def test_transport_rewrites_only_chat_posts():
    req = httpx.Request("POST", "http://x/v1/chat/completions", json={"messages": ASK, "tools": TOOLS})
    sent = json.loads(tools._rewrite(req).content)
    assert sent["messages"][-1]["content"] == tools.PREFILL
    other = httpx.Request("POST", "http://x/v1/embeddings", json={"input": "x"})
    assert tools._rewrite(other) is other


def test_tool_calls_of_recorded_response():
    recorded = json.loads(RECORDED.read_text())
    assert recorded["choices"][0]["finish_reason"] == "tool_calls"
    assert tools.tool_calls_of(recorded) == [("get_weather", {"city": "Paris"})]


def test_template_ships_with_the_lab():
    assert tools.TEMPLATE.is_file() and "<tool_call>" in tools.TEMPLATE.read_text()
