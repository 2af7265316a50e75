"""Tiny network helpers: is a port taken, a free port, and one rule for URLs given as a server root or its /v1."""
from __future__ import annotations

import socket

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['free_port', 'port_open']


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (for tests and side servers)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def url_for(base_url: str, path: str) -> str:
    """`path` (written from the server root, e.g. /v1/chat/completions) on a server given either as its root
    (http://127.0.0.1:8080) or as what OpenAI clients want (…/v1, the value of OPENAI_BASE_URL): one rule,
    both forms accepted."""
    base = base_url.rstrip("/")
    if base.endswith("/v1") and (path == "/v1" or path.startswith("/v1/")):
        base = base[:-3]
    return base + path
