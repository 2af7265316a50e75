"""Server lifecycles: `up("llamacpp")` / `up("ollama")` give a healthy server, started or reused."""
from __future__ import annotations

from .base import PLACEHOLDER_KEY, Server
from .llamacpp import start_llama_server
from .ollama import start_ollama

KINDS = ("llamacpp", "ollama")

__all__ = ["KINDS", "PLACEHOLDER_KEY", "Server", "start_llama_server", "start_ollama"]
