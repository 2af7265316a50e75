"""labkit.scale: nginx's $upstream_addr parsing on a recorded real access log, the generated gateway config, and
live runs on loopback (ports 8183-8185, 50052-50053, 8196): an RPC-distributed llama-server answers and stops
server-first; the gateway balances, checks its key and survives a killed replica. Nothing left running."""
from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from labkit.procs import wait_gone
from labkit import scale
from labkit.home import data_dir
from labkit.net import port_open

CHAT = {"messages": [{"role": "user", "content": "你好"}], "max_tokens": 4, "temperature": 0, "seed": 42}




# ------------------------------------------------------------------------------------------- pure
def test_tried_and_answered_by_read_nginx_upstream_addr():
    assert scale.tried("127.0.0.1:8181") == ["127.0.0.1:8181"]
    assert scale.tried("127.0.0.1:8181, 127.0.0.1:8182") == ["127.0.0.1:8181", "127.0.0.1:8182"]
    assert scale.tried("127.0.0.1:8181 : 127.0.0.1:9000") == ["127.0.0.1:8181", "127.0.0.1:9000"]
    assert scale.tried("-") == [] and scale.answered_by("-") == ""
    assert scale.answered_by("127.0.0.1:8181, 127.0.0.1:8182") == "127.0.0.1:8182"


def test_recorded_access_log_shows_round_robin_then_failover():
    rows = scale.parse_access_log((data_dir() / "scale" / "gateway-access.log").read_text())
    assert len(rows) == 12
    ok = [addr for status, addr in rows if status == 200]
    assert scale.tally(ok[:6]) == {"127.0.0.1:8181": 3, "127.0.0.1:8182": 3}   # round robin
    assert (401, "-") in rows                                                    # the gateway's own 401
    failover = [addr for addr in ok if len(scale.tried(addr)) > 1]
    assert failover == ["127.0.0.1:8181, 127.0.0.1:8182"]                      # one retry, then 8181 disabled
    assert set(scale.tally(ok[6:])) == {"127.0.0.1:8182"}


def test_gateway_config_has_pool_failover_and_key(tmp_path: Path):
    conf = scale.gateway_config(["127.0.0.1:8181", "127.0.0.1:8182"], port=8195, token="sk-x", prefix=tmp_path,
                                backups=["127.0.0.1:11434"])
    assert "server 127.0.0.1:8181 max_fails=1" in conf and "server 127.0.0.1:11434 backup;" in conf
    assert "proxy_next_upstream error timeout http_502" in conf
    assert 'if ($http_authorization != "Bearer sk-x")' in conf
    assert f"add_header {scale.UPSTREAM_HEADER} $upstream_addr always;" in conf
    assert "Bearer" not in scale.gateway_config(["a:1"], port=1, token=None, prefix=tmp_path)


def test_rpc_worker_argv_is_what_you_would_type():
    argv = scale.rpc_worker_argv(Path("/x/ggml-rpc-server"), host="10.0.0.2", port=50052, threads=4)
    assert argv == ["/x/ggml-rpc-server", "--host", "10.0.0.2", "--port", "50052", "--threads", "4"]


# ------------------------------------------------------------------------------------------- live
@pytest.mark.timeout(120)
def test_rpc_cluster_answers_and_stops_server_first():
    with scale.start_rpc_cluster(worker_ports=(50052, 50053), port=8183, model="smollm2-rpc-test") as cluster:
        server_proc = cluster.server.proc
        pids = [server_proc.pid, *(w.proc.pid for w in cluster.workers)]
        assert "--rpc" in cluster.server.proc.argv and "127.0.0.1:50052,127.0.0.1:50053" in cluster.server.proc.argv
        r = cluster.server.client().chat.completions.create(model=cluster.server.model, **CHAT)
        assert r.choices[0].message.role == "assistant" and r.usage.completion_tokens > 0
        assert all("Accepted client connection" in w.log_tail(200) for w in cluster.workers)
    assert all(wait_gone(p) for p in pids)
    assert not any(port_open("127.0.0.1", p) for p in (8183, 50052, 50053))
    # server stopped first, so it exits cleanly on SIGTERM instead of crashing on a vanished worker
    assert server_proc.returncode not in (-signal.SIGSEGV, -signal.SIGABRT), server_proc.log_tail()


@pytest.mark.timeout(120)
def test_gateway_balances_checks_key_and_survives_a_killed_replica():
    with scale.start_pool((8184, 8185), gateway_port=8196, token="sk-gw-test") as pool:
        gw = pool.gateway
        url = gw.openai_base_url + "/chat/completions"
        assert httpx.post(url, json=CHAT, timeout=60).status_code == 401
        seen = []
        for _ in range(4):
            r = httpx.post(url, json=CHAT, headers=gw.headers(), timeout=60)
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
            seen.append(r.headers[scale.UPSTREAM_HEADER])
        assert scale.tally(seen) == {"127.0.0.1:8184": 2, "127.0.0.1:8185": 2}
        dead = pool.replicas[0].proc
        dead.popen.kill()
        dead.popen.wait(10)
        after = []
        for _ in range(3):
            raw = gw.client().chat.completions.with_raw_response.create(model="smollm2-135m", **CHAT)
            assert raw.http_response.status_code == 200 and raw.parse().choices[0].message.content is not None
            after.append(raw.headers[scale.UPSTREAM_HEADER])
        assert {scale.answered_by(a) for a in after} == {"127.0.0.1:8185"}
        pids = [gw.proc.pid, *(r.proc.pid for r in pool.replicas if r.proc)]
    assert all(wait_gone(p) for p in pids)
    assert not any(port_open("127.0.0.1", p) for p in (8184, 8185, 8196))
