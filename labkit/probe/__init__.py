"""`labkit probe URL…`: how OpenAI-compatible is a server, really? A battery of small real requests, one ✔/✘ each.

    from labkit import probe
    results = probe.probe("http://127.0.0.1:8080", model="smollm2-135m")
    print(probe.format_table({"llama-server": results}))

Each check (`CHECKS`) is its request(s) and a pure judge of the reply, so the judges are unit-tested on replies
recorded from the real servers (data/bench/probe_*.json). A judge answers True (✔), False (✘) or None (·
— informational: the server is allowed to do either, the detail says which).

    checks.py   CHECKS (name, requests, judge), the judges, format_table — pure, unit-tested
    runner.py   send, probe, default_model — the HTTP side
    cli.py      `labkit probe`, `python -m labkit.probe`
"""
from __future__ import annotations

from .checks import (BY_NAME, CHECKS, SCHEMA, TOOL, Check, CheckSpec, HttpReply, format_table, judge, judge_auth,
                     judge_chat, judge_embeddings, judge_error_shape, judge_include_usage, judge_json_object,
                     judge_json_schema, judge_logprobs, judge_max_completion_tokens, judge_messages, judge_models,
                     judge_n2, judge_reasoning, judge_responses, judge_same, judge_stop, judge_stream,
                     judge_tool_choice, judge_tools_accepted, sse_chunks)
from .cli import add_cli
from .runner import default_model, probe, send

__all__ = ["BY_NAME", "CHECKS", "Check", "CheckSpec", "HttpReply", "SCHEMA", "TOOL", "add_cli", "default_model",
           "format_table", "judge", "judge_auth", "judge_chat", "judge_embeddings", "judge_error_shape",
           "judge_include_usage", "judge_json_object", "judge_json_schema", "judge_logprobs",
           "judge_max_completion_tokens", "judge_messages", "judge_models", "judge_n2", "judge_reasoning",
           "judge_responses", "judge_same", "judge_stop", "judge_stream", "judge_tool_choice",
           "judge_tools_accepted", "probe", "send", "sse_chunks"]
