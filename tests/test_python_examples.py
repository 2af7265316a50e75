"""The original guide's three Python programs (examples/python/), corrected, each run as a learner runs it —
`python main.py` in its folder, configured by OPENAI_BASE_URL / OPENAI_API_KEY / LABKIT_MODEL_NAME — against
the session's real servers, streamed and not. Their errors are checked too: one line, exit code 1."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import labkit
from labkit.net import free_port
from labkit.servers.install import find_ollama

ROOT = Path(__file__).resolve().parents[1] / "examples" / "python"


def server_for(kind: str) -> labkit.Server:
    if kind == "ollama" and not find_ollama():
        pytest.skip("the Ollama binary is not built yet (`labkit setup` builds it)")
    return labkit.up(kind, export=False, quiet=True)


def run(program: str, *args: str, env: dict[str, str], ok: bool = True, timeout: float = 120):
    """`python main.py ARGS` in examples/python/<program>; its JSON lines when ok, else the finished process."""
    proc = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT / program, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})
    if not ok:
        return proc
    assert proc.returncode == 0, f"{program}/main.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("kind", ["llamacpp", "ollama"])
def test_openai_python_streams_and_chats(kind):
    server = server_for(kind)
    stream, chat = run("OpenAIPython", "--json", "--max-tokens", "16", env=server.env())
    for r in (stream, chat):
        assert r["text"].strip() and r["finish_reason"] in ("stop", "length"), r
        u = r["usage"]
        assert 0 < u["completion_tokens"] <= 16 and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    assert stream["mode"] == "stream" and stream["chunks"] > 1, "a stream comes in several chunks"
    assert chat["mode"] == "chat" and chat["model"] == server.model
    assert stream["usage"]["prompt_tokens"] == chat["usage"]["prompt_tokens"], "the same conversation both times"
    if kind == "llamacpp":  # greedy (temperature 0) on one server: the same text streamed or not
        assert stream["text"] == chat["text"]


def test_openai_python_plain_output_streams_text():
    server = server_for("llamacpp")
    proc = subprocess.run([sys.executable, "main.py", "--max-tokens", "8"], cwd=ROOT / "OpenAIPython",
                          capture_output=True, text=True, timeout=120, env={**os.environ, **server.env()})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("usage: {") == 2 and "== stream ==" in proc.stdout and "== chat ==" in proc.stdout


def test_openai_python_errors_are_one_line():
    closed = run("OpenAIPython", "--mode", "chat", env={"OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"},
                 ok=False)
    assert closed.returncode == 1 and "no server answers" in closed.stderr and "Traceback" not in closed.stderr
    ollama = server_for("ollama")
    wrong = run("OpenAIPython", "--mode", "chat", "--model", "no-such-model",
                env=ollama.env(), ok=False)
    assert wrong.returncode == 1 and "HTTP 404" in wrong.stderr and "Traceback" not in wrong.stderr


def test_autogen_classic_chat():
    server = server_for("llamacpp")
    (out,) = run("AutoGen", "--json", "--max-tokens", "16", "--max-turns", "2", env=server.env(), timeout=180)
    names = [t["name"] for t in out["turns"]]
    assert names == ["user_proxy", "assistant", "user_proxy", "assistant"], names
    assert out["turns"][0]["content"] == "你好请你介绍一下自己"
    assert out["turns"][2]["content"] == "你分析的对，请继续分析", "the proxy's default_auto_reply, no human asked"
    assert out["turns"][1]["content"].strip() and out["turns"][3]["content"].strip()


@pytest.mark.parametrize("mode", ["stream", "sync"])
def test_agents_sdk_program(mode):
    server = server_for("llamacpp")
    args = ["--json", "--max-tokens", "16"] + (["--no-stream"] if mode == "sync" else [])
    (out,) = run("OpenAI-Agent-SDK", *args, env=server.env())
    assert out["mode"] == mode and out["final_output"].strip() and out["output_tokens"] > 0, out
    if mode == "stream":
        assert out["deltas"] > 1 and out["joined_equals_final"], "the deltas add up to the final output"
    else:
        assert out["requests"] == 1
