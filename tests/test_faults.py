"""Faults that really happen, on private servers (ports 8150-8159, 11450-11459): a server killed mid-stream,
a port held by a stranger, a server too slow to load, Ollama's runners after its owner is killed, and two
"notebooks" (processes) sharing one server at once. Complements tests/test_servers.py (start/reuse/corrupt GGUF/
llama-server orphans). Everything bounded in time; nothing left running."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import psutil
import pytest

import labkit
from labkit.procs import wait_gone
from labkit.diagnose import explain_exception
from labkit.errors import PortBusyError, ServerStartError
from labkit.servers import start_llama_server
from labkit.servers.ollama import start_ollama
from labkit.sse import StreamError, iter_chunks, iter_events




def test_server_killed_mid_stream_gives_a_clear_error_and_up_restarts_it():
    opts = dict(port=8150, model="smollm2-faults", parallel=1, ctx_size=512, export=False, quiet=True)
    first = labkit.up("llamacpp", **opts)
    first_pid = first.proc.pid
    payload = {"model": first.model, "messages": [{"role": "user", "content": "写一个很长的故事。"}],
               "max_tokens": 400, "temperature": 0.8, "stream": True}
    got: list[dict] = []
    with pytest.raises((httpx.HTTPError, StreamError)) as err:
        with httpx.stream("POST", first.openai_base_url + "/chat/completions", json=payload, timeout=120,
                          headers=first.headers()) as r:
            for chunk in iter_chunks(iter_events(r.iter_bytes())):
                got.append(chunk)
                if len(got) == 2:  # the reply is flowing: now the server dies
                    os.killpg(first_pid, signal.SIGKILL)
    assert len(got) >= 2
    # Either httpx notices the connection dropped, or the strict SSE reader notices [DONE] never came.
    text = str(err.value)
    if isinstance(err.value, httpx.HTTPError):
        d = explain_exception(err.value)
        assert d.kind == "connection_lost" and "labkit.up" in d.fix, d
    else:
        assert "[DONE]" in text or "ended" in text.lower(), text
    assert wait_gone(first_pid)
    second = labkit.up("llamacpp", **opts)  # the next call notices the dead server and starts a new one
    assert second.alive() and second.proc.pid != first_pid
    r = httpx.post(second.openai_base_url + "/chat/completions", headers=second.headers(), timeout=120,
                   json={**payload, "stream": False, "max_tokens": 4})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")
    labkit.down("llamacpp")  # ours only: the session's 8080 is reused, not owned, and stays up
    assert not second.alive()


def test_port_held_by_a_stranger_is_refused_for_ollama_too():
    with socket.create_server(("127.0.0.1", 11451)) as stranger:
        stranger.listen()
        with pytest.raises(PortBusyError, match="not Ollama"):
            start_ollama(port=11451, timeout=10)


def test_a_client_never_talks_to_the_wrong_process():
    """A web server on the port is not mistaken for llama-server: identify() checks /props and /v1/models."""
    code = "import http.server as h; h.HTTPServer(('127.0.0.1', 8156), h.SimpleHTTPRequestHandler).serve_forever()"
    stranger = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not labkit.net.port_open("127.0.0.1", 8156) and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(PortBusyError, match="not llama-server"):
            labkit.up("llamacpp", port=8156, model="smollm2-stranger", export=False, quiet=True)
    finally:
        stranger.kill()
        stranger.wait(10)


def test_server_slow_to_load_is_a_bounded_wait(tmp_path):
    """A server that never turns healthy: labkit gives up at the timeout, says so, and stops the process."""
    slow = tmp_path / "slow-server"
    slow.write_text("#!/bin/sh\necho 'loading model (pretending, forever)'\nexec sleep 300\n")
    slow.chmod(0o755)
    t0 = time.monotonic()
    with pytest.raises(ServerStartError, match="did not become healthy within 3 s") as err:
        start_llama_server(port=8157, model="smollm2-slow", binary=slow, timeout=3)
    assert time.monotonic() - t0 < 15
    assert "LABKIT_START_TIMEOUT" in str(err.value) and "pretending" in err.value.log_tail
    assert not labkit.net.port_open("127.0.0.1", 8157)
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(slow) in " ".join(p.info["cmdline"] or [])]
    assert not [p for p in leftovers if p.status() != psutil.STATUS_ZOMBIE], "the slow server was left running"


SHARER = textwrap.dedent("""
    import json, sys, httpx, labkit
    s = labkit.up("llamacpp", export=False, quiet=True)
    r = httpx.post(s.openai_base_url + "/chat/completions", headers=s.headers(), timeout=120, json={
        "model": s.model, "messages": [{"role": "user", "content": sys.argv[1]}], "max_tokens": 4})
    print(json.dumps({"owned": s.owned, "status": r.status_code, "id": r.json().get("id")}))
""")


def test_two_notebooks_share_one_server_at_once():
    """Two kernels calling labkit.up() at the same time both reuse the running server; neither stops it."""
    shared = labkit.up("llamacpp", export=False, quiet=True)
    procs = [subprocess.Popen([sys.executable, "-c", SHARER, prompt], stdout=subprocess.PIPE, text=True)
             for prompt in ("你好", "hello")]
    outs = [json.loads(p.communicate(timeout=180)[0].strip().splitlines()[-1]) for p in procs]
    assert [o["status"] for o in outs] == [200, 200]
    assert not any(o["owned"] for o in outs), "a kernel started its own server instead of sharing"
    assert outs[0]["id"] != outs[1]["id"]
    assert shared.alive(), "a kernel that exited stopped the shared server"


OLLAMA_CHILD = textwrap.dedent("""
    import sys, psutil
    from labkit.servers.ollama import start_ollama
    s = start_ollama(port=int(sys.argv[1]), timeout=180)
    kids = [c.pid for c in psutil.Process(s.proc.pid).children(recursive=True)]
    print(s.proc.pid, *kids, flush=True)
    import time; time.sleep(600)
""")


@pytest.mark.timeout(300)
def test_no_orphan_ollama_runners_when_the_kernel_is_killed():
    """Ollama serves through `ollama runner` children; SIGKILL of the owner must take them all."""
    child = subprocess.Popen([sys.executable, "-c", OLLAMA_CHILD, "11452"], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in child.stdout.readline().split()]
    finally:
        child.kill()
        child.wait(30)
    assert len(pids) >= 2, f"expected ollama serve and at least one runner, got {pids}"
    for pid in pids:
        assert wait_gone(pid), f"pid {pid} outlived its killed owner"
    assert not labkit.net.port_open("127.0.0.1", 11452)


def test_a_server_that_stops_sending_mid_stream_is_named_by_stream_chat():
    """SIGSTOP after two chunks: labkit.sse.stream_chat (given the /v1 form of the URL) says the server stopped
    sending, after how many chunks, within its timeout, instead of a bare httpx.ReadTimeout."""
    from labkit.sse import SSEError, stream_chat
    server = labkit.up("llamacpp", port=8151, model="smollm2-stall", parallel=1, ctx_size=512, export=False,
                       quiet=True)
    payload = {"model": server.model, "messages": [{"role": "user", "content": "写一个很长的故事。"}],
               "max_tokens": 200, "temperature": 0}
    got = 0
    try:
        with pytest.raises(SSEError) as err:
            for _ in stream_chat(server.openai_base_url, payload, api_key=server.key, timeout=3):
                got += 1
                if got == 2:
                    os.killpg(server.proc.pid, signal.SIGSTOP)
        assert "stopped sending" in str(err.value) and "after 2 chunk(s)" in str(err.value), err.value
        assert "labkit status" in str(err.value)
    finally:
        os.killpg(server.proc.pid, signal.SIGCONT)
        labkit.down("llamacpp")
