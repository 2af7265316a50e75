"""Scale out on engines that already do it: llama.cpp RPC workers, replicas behind an nginx gateway.

Nothing here is a cluster of our own. llama.cpp splits one model across hosts (`ggml-rpc-server` workers +
`llama-server --rpc`), nginx balances and fails over between replicas; the lab only starts and stops them.

    with labkit.scale.start_rpc_cluster(worker_ports=(50050, 50051), port=8180) as cluster:
        cluster.server.client().chat.completions.create(...)     # same client code as for one server
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import psutil

from .cpu import llama_cpp_env
from .errors import PortBusyError
from .home import subdir
from .net import port_open
from .procs import ManagedProcess, wait_until_ready
from .proxy import Proxy, nginx_preamble, nginx_temp_paths, run_nginx
from .servers import Server
from .servers.install import find_tool, require_tool
from .servers.llamacpp import start_llama_server

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['UPSTREAM_HEADER', 'answered_by', 'parse_access_log', 'rpc_arg', 'start_pool', 'start_rpc_cluster',
           'start_rpc_worker', 'tally', 'tried']

RPC_PORTS = range(50050, 50060)       # the course's ports for RPC workers
REPLICA_PORTS = range(8180, 8190)     # llama-servers of this lesson
GATEWAY_PORTS = range(8195, 8200)     # nginx gateway
UPSTREAM_HEADER = "X-Upstream"        # the gateway tells which replica answered


# ---------------------------------------------------------------------------------------------- RPC workers
def rpc_server_binary() -> Path:
    """llama.cpp's RPC worker; only present when llama.cpp was built with -DGGML_RPC=ON."""
    return find_tool("ggml-rpc-server") or find_tool("rpc-server") or require_tool(  # rpc-server: its older name
        "ggml-rpc-server", fix="Rebuild llama.cpp with -DGGML_RPC=ON (cmake -B build -DGGML_RPC=ON), or set "
                               "LLAMA_SERVER_BIN to a build that has it.")


def rpc_worker_argv(binary: Path, *, host: str = "127.0.0.1", port: int = 50050, threads: int = 1) -> list[str]:
    """The command a worker host runs: what you would type on each machine of the cluster."""
    return [str(binary), "--host", host, "--port", str(port), "--threads", str(threads)]


def listening(host: str, port: int) -> bool:
    """True when a socket listens on host:port — checked in the kernel's table, without connecting
    (an RPC worker serves one client at a time; a probe connection would be a client)."""
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.laddr.ip in (host, "0.0.0.0")
               for c in psutil.net_connections(kind="tcp"))


@dataclass
class RpcWorker:
    """One `ggml-rpc-server`: a remote ggml backend that holds part of the model's weights and computes."""

    host: str
    port: int
    proc: ManagedProcess

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.proc.alive()

    def log_tail(self, lines: int = 25) -> str:
        return self.proc.log_tail(lines)

    def stop(self) -> None:
        self.proc.stop()


def start_rpc_worker(port: int = 50050, *, host: str = "127.0.0.1", threads: int = 1,
                     timeout: float = 15) -> RpcWorker:
    """Start one RPC worker and wait until it listens (fail fast with its log when it exits)."""
    if port_open(host, port, timeout=0.2) or listening(host, port):
        raise PortBusyError(f"Port {port} on {host} is taken; an RPC worker cannot listen there.",
                            fix=f"Pick another port ({RPC_PORTS.start}-{RPC_PORTS.stop - 1}) or stop what listens there.")
    log = subdir("logs") / f"rpc-worker-{port}.log"
    worker = RpcWorker(host, port, ManagedProcess(rpc_worker_argv(rpc_server_binary(), host=host, port=port,
                                                                  threads=threads), log_path=log,
                                                  env=llama_cpp_env()))
    wait_until_ready(worker.proc, lambda: listening(host, port), timeout=timeout,
                     what=f"ggml-rpc-server on {host}:{port}", fix=f"Read {log}.")
    return worker


def rpc_arg(workers: Iterable[RpcWorker]) -> str:
    """llama-server's --rpc value: the workers' host:port, comma separated."""
    return ",".join(w.endpoint for w in workers)


@dataclass
class RpcCluster:
    """One llama-server whose layers live on RPC workers. Stop order matters: the server first, then workers
    (a llama-server whose worker vanished first crashes on exit)."""

    server: Server
    workers: list[RpcWorker]

    def stop(self) -> None:
        self.server.stop()
        for w in self.workers:
            w.stop()

    def __enter__(self) -> "RpcCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_rpc_cluster(*, worker_ports: Sequence[int] = (50050, 50051), port: int = 8180,
                      model: str = "smollm2-rpc", host: str = "127.0.0.1", worker_threads: int = 1,
                      ctx_size: int = 512, parallel: int = 1, threads: int = 1, timeout: float = 60,
                      **options) -> RpcCluster:
    """Start the workers, then `llama-server --rpc w1,w2 -ngl 99` (all layers offloaded to them)."""
    workers: list[RpcWorker] = []
    try:
        for p in worker_ports:
            workers.append(start_rpc_worker(p, host=host, threads=worker_threads))
        extra = ["--rpc", rpc_arg(workers), "-ngl", "99", *options.pop("extra_args", ())]
        server = start_llama_server(port=port, host=host, model=model, ctx_size=ctx_size, parallel=parallel,
                                    threads=threads, extra_args=extra, reuse=False, timeout=timeout, **options)
    except BaseException:
        for w in workers:
            w.stop()
        raise
    return RpcCluster(server, workers)


# ---------------------------------------------------------------------------------------------- replicas
def start_replicas(ports: Sequence[int] = (8181, 8182), *, model: str | None = None, ctx_size: int = 512,
                   parallel: int = 1, threads: int = 1, timeout: float = 60, **options) -> list[Server]:
    """Identical llama-servers (same GGUF, same model name: the lab's unless given) on several ports: the pool a
    gateway balances."""
    servers: list[Server] = []
    try:
        for p in ports:
            servers.append(start_llama_server(port=p, model=model, ctx_size=ctx_size, parallel=parallel,
                                              threads=threads, reuse=False, timeout=timeout, **options))
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: Iterable[Server | RpcCluster | Proxy]) -> None:
    """Stop every handle given (reused servers are left to their owner, as Server.stop does)."""
    for s in servers:
        s.stop()


# ---------------------------------------------------------------------------------------------- gateway
def gateway_config(upstreams: Sequence[str], *, port: int, token: str | None, prefix: Path,
                   backups: Sequence[str] = (), host: str = "127.0.0.1") -> str:
    """nginx.conf for one /v1 in front of a pool: round robin, retry the next replica on error, say who answered."""
    servers = "".join(f"        server {u} max_fails=1 fail_timeout=10s;\n" for u in upstreams)
    servers += "".join(f"        server {u} backup;\n" for u in backups)
    auth = (f'        if ($http_authorization != "Bearer {token}") {{\n'
            f'            return 401 \'{{"error":{{"message":"missing or wrong bearer token","type":"auth"}}}}\';\n'
            f'        }}\n') if token else ""
    return f"""# generated by labkit.scale — one OpenAI endpoint over {len(upstreams)} replicas
{nginx_preamble(prefix)}http {{
    log_format upstream '$remote_addr "$request" $status upstream=$upstream_addr';
    access_log {prefix}/access.log upstream;
{nginx_temp_paths(prefix)}    upstream llm_pool {{
{servers}        keepalive 8;
    }}
    server {{
        listen {host}:{port};
        default_type application/json;
        add_header {UPSTREAM_HEADER} $upstream_addr always;
        location = /health {{ proxy_pass http://llm_pool; }}
        location / {{
{auth}            proxy_pass http://llm_pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host localhost;        # Ollama only answers known Host names
            proxy_set_header Authorization "";      # the replicas never see the gateway's key
            proxy_buffering off;                    # SSE streams flow through
            proxy_next_upstream error timeout http_502 http_503;   # failover: try the next replica
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def start_gateway(upstreams: Sequence[str], *, port: int = 8195, token: str | None = None,
                  backups: Sequence[str] = (), host: str = "127.0.0.1", timeout: float = 15) -> Proxy:
    """Run nginx on host:port balancing over `upstreams` ("127.0.0.1:8181", ...); checks `token` when given."""
    proc, conf = run_nginx(f"gateway-{port}", lambda prefix: gateway_config(
        upstreams, port=port, token=token, prefix=prefix, backups=backups, host=host), port=port, host=host,
        timeout=timeout, what="the nginx gateway",
        port_fix=f"Pick another port ({GATEWAY_PORTS.start}-{GATEWAY_PORTS.stop - 1}) or stop it.")
    return Proxy(port, ",".join([*upstreams, *backups]), token, False, proc, conf, host)


def tried(upstream_addr: str) -> list[str]:
    """Every replica nginx tried for one request, in order (more than one means it failed over)."""
    return [t for t in (s.strip() for s in upstream_addr.replace(" : ", ",").split(",")) if t and t != "-"]


def answered_by(upstream_addr: str) -> str:
    """The replica that produced the response: the last one in nginx's $upstream_addr ("a:1, b:2")."""
    tries = tried(upstream_addr)
    return tries[-1] if tries else ""


def tally(upstream_addrs: Iterable[str]) -> Counter:
    """How many requests each replica answered."""
    return Counter(answered_by(a) for a in upstream_addrs if answered_by(a))


def parse_access_log(text: str) -> list[tuple[int, str]]:
    """(status, $upstream_addr) per request from the gateway's access log ("-" when nginx answered itself)."""
    rows = []
    for line in text.splitlines():
        m = re.search(r'" (\d{3}) upstream=(.*)$', line)
        if m:
            rows.append((int(m.group(1)), m.group(2).strip()))
    return rows


@dataclass
class Pool:
    """Replicas plus the gateway in front of them, stopped gateway first."""

    gateway: Proxy
    replicas: list[Server] = field(default_factory=list)

    def stop(self) -> None:
        self.gateway.stop()
        stop_all(self.replicas)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_pool(ports: Sequence[int] = (8181, 8182), *, gateway_port: int = 8195, token: str | None = None,
               backups: Sequence[str] = (), **options) -> Pool:
    """Replicas on `ports` and one keyed gateway over them (`backups` only serve when every replica is down)."""
    replicas = start_replicas(ports, **options)
    try:
        gateway = start_gateway([f"{r.host}:{r.port}" for r in replicas], port=gateway_port, token=token,
                                backups=backups)
    except BaseException:
        stop_all(replicas)
        raise
    return Pool(gateway, replicas)
