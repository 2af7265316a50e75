"""labkit.probe: the judges on replies recorded from both real servers, and a short live run."""
from __future__ import annotations

import json

import pytest

import labkit
from labkit import probe
from labkit.home import data_dir
from labkit.tables import MARK


def load(name: str) -> tuple[str, dict[str, list[probe.HttpReply]]]:
    raw = json.loads((data_dir() / "bench" / name).read_text())
    return raw["model"], {k: [probe.HttpReply(**r) for r in v] for k, v in raw["replies"].items()}


@pytest.fixture(scope="module")
def llama():
    model, replies = load("probe_llamacpp.json")
    return {name: probe.judge(name, rs, model) for name, rs in replies.items()}


@pytest.fixture(scope="module")
def ollama():
    model, replies = load("probe_ollama.json")
    return {name: probe.judge(name, rs, model) for name, rs in replies.items()}


def test_every_check_was_recorded(llama, ollama):
    assert set(llama) == set(probe.BY_NAME) and len(probe.CHECKS) == len(probe.BY_NAME) == 19
    assert set(ollama) <= set(probe.BY_NAME) and len(ollama) >= 14  # three timed out (no reply to record)


def test_llama_server_passes_the_core_api(llama):
    for name in ("models list", "non-stream chat", "stream", "stream include_usage", "seed determinism", "n > 1",
                 "logprobs", "max_completion_tokens", "json_object", "json_schema", "/v1/responses", "error shape"):
        assert llama[name].ok is True, (name, llama[name].detail)
    assert "timings" in llama["stream include_usage"].detail  # llama.cpp adds its timings to the usage chunk
    assert llama["/v1/messages (Anthropic)"].ok is True  # the Anthropic Messages API too (lesson 17)


def test_findings_recorded_from_llama_server(llama):
    assert llama["/v1/embeddings"].ok is False and "501" in llama["/v1/embeddings"].detail  # needs --embeddings
    assert llama["tool_choice (forced)"].ok is False  # SmolLM2's template has no tools: plain text comes back
    assert llama["auth (wrong key)"].ok is None and "open" in llama["auth (wrong key)"].detail


def test_ollama_recorded_replies(ollama):
    assert ollama["models list"].ok and "smollm2-135m:latest" in ollama["models list"].detail
    assert ollama["/v1/embeddings"].ok and "dimension 576" in ollama["/v1/embeddings"].detail
    assert ollama["tools"].ok is False and "does not support tools" in ollama["tools"].detail
    assert ollama["error shape"].ok is True
    assert ollama["/v1/messages (Anthropic)"].ok is True


def test_messages_judge_on_edge_cases():
    assert probe.judge_messages(probe.HttpReply(400, {"type": "error", "error": {"message": "max_tokens is required"}}))[0] is False
    no_text = {"type": "message", "content": [], "stop_reason": "end_turn", "usage": {"output_tokens": 0}}
    assert probe.judge_messages(probe.HttpReply(200, no_text))[0] is False


def test_error_and_auth_judges_on_edge_cases():
    assert probe.judge_error_shape(probe.HttpReply(500, None, "boom")) == (False, "HTTP 500, error=NoneType: boom")
    assert probe.judge_auth(probe.HttpReply(401, {"error": {"message": "Invalid API Key"}}))[0] is True
    assert probe.judge_chat(probe.HttpReply(503, {"error": {"message": "Loading model"}})) == (
        False, "HTTP 503: Loading model")


def test_table_puts_servers_side_by_side(llama, ollama):
    names = list(ollama)
    table = probe.format_table({"llama-server": [llama[n] for n in names], "ollama": [ollama[n] for n in names]},
                               details=False)
    header, rule, *rows, passed = table.splitlines()
    assert "llama-server" in header and "ollama" in header and set(rule) == {"─"} and len(rows) == len(names)
    assert all(row.startswith(name) and row.split()[-2:] == [MARK[llama[name].ok],
                                                             MARK[ollama[name].ok]]
               for row, name in zip(rows, names))
    assert passed.startswith("passed: llama-server ")


def test_live_probe_against_the_session_llama_server():
    server = labkit.up("llamacpp", export=False, quiet=True)
    checks = probe.probe(server.base_url, server.model, api_key=server.key, timeout=60,
                         only=["models list", "non-stream chat", "error shape"])
    assert [c.ok for c in checks] == [True, True, True], checks


def test_the_cli_takes_the_openai_base_url_with_v1_and_picks_the_lab_model():
    """`labkit probe $OPENAI_BASE_URL` (…/v1) works as the root does, and probes the lab's model by default."""
    import subprocess
    import sys
    server = labkit.up("llamacpp", export=False, quiet=True)
    assert probe.default_model(server.openai_base_url) == server.model
    out = subprocess.run([sys.executable, "-m", "labkit", "probe", server.openai_base_url, "--only", "models list",
                          "--only", "non-stream chat"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "models list" in out.stdout and "✔" in out.stdout and "HTTP 404" not in out.stdout


def test_url_for_accepts_the_root_and_the_v1_form():
    from labkit.net import url_for
    for base in ("http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/"):
        assert url_for(base, "/v1/chat/completions") == "http://h:1/v1/chat/completions"
    assert url_for("http://h:1/v1", "/health") == "http://h:1/v1/health"  # only /v1 paths fold


def test_stream_judge_counts_answer_chunks_only():
    """A stream whose chunks carry only reasoning has no content: the judge says so."""
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in (
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"reasoning_content": "hm"}}]},
        {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}))
    ok, detail = probe.judge_stream(probe.HttpReply(200, None, body + "data: [DONE]\n\n"))
    assert ok is False and "0 with content" in detail
