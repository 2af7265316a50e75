"""Server lifecycles: `up("llamacpp")` / `up("ollama")` give a healthy server, started or reused."""
from __future__ import annotations

import os

from .base import PLACEHOLDER_KEY, Server
from .llamacpp import start_llama_server
from .ollama import start_ollama

KINDS = ("llamacpp", "ollama")
PORT_ENV = {"llamacpp": "LABKIT_LLAMACPP_PORT", "ollama": "LABKIT_OLLAMA_PORT"}


def port_of(kind: str) -> int:
    """The lab's port for a server kind: its environment variable, else the server's usual port."""
    from .llamacpp import DEFAULT_PORT as llama_port
    from .ollama import DEFAULT_PORT as ollama_port
    return int(os.environ.get(PORT_ENV[kind]) or {"llamacpp": llama_port, "ollama": ollama_port}[kind])

__all__ = ["KINDS", "PORT_ENV", "port_of", "PLACEHOLDER_KEY", "Server", "start_llama_server", "start_ollama"]
