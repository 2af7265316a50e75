"""Local LLM Lab helpers: bring up real local servers and talk to them through the OpenAI-compatible API.

    import labkit
    llama = labkit.up("llamacpp")      # llama-server on the embedded model, started or reused
    client = llama.client()            # an openai.OpenAI pointed at it
"""
from __future__ import annotations

from .errors import LabkitError
from .servers import KINDS, PLACEHOLDER_KEY, Server
from .session import down, up

__all__ = ["KINDS", "LabkitError", "PLACEHOLDER_KEY", "Server", "down", "up"]
__version__ = "0.1.0"
