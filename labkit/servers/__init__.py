"""Server lifecycles: `up("llamacpp")` / `up("ollama")` give a healthy server, started or reused."""
from __future__ import annotations

from .base import DEFAULT_PORT, PLACEHOLDER_KEY, PORT_ENV, Server, port_of
from .llamacpp import start_llama_server
from .ollama import start_ollama

KINDS = ("llamacpp", "ollama")


def start(kind: str, **options) -> Server:
    """Start (or reuse) a server of `kind`; `options` go to start_llama_server / start_ollama."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    return (start_llama_server if kind == "llamacpp" else start_ollama)(**options)


__all__ = ["DEFAULT_PORT", "KINDS", "PORT_ENV", "PLACEHOLDER_KEY", "Server", "port_of", "start",
           "start_llama_server", "start_ollama"]
