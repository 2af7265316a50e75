"""Server lifecycles: `up("llamacpp")` / `up("ollama")` give a healthy server, started or reused."""
from __future__ import annotations

from .base import PLACEHOLDER_KEY, Server
from .kinds import KINDS, Kind, kind_of, port_of
from .llamacpp import start_llama_server
from .ollama import start_ollama


def start(kind: str, **options) -> Server:
    """Start (or reuse) a server of `kind`; `options` go to start_llama_server / start_ollama."""
    return kind_of(kind).start(**options)


__all__ = ["KINDS", "Kind", "PLACEHOLDER_KEY", "Server", "kind_of", "port_of", "start", "start_llama_server",
           "start_ollama"]
