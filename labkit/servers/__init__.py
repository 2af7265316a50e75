"""Server lifecycles: `up("llamacpp")` / `up("ollama")` give a healthy server, started or reused.

Layers, each importing only those below it: `kinds` (data) ← `base` (a Server, health) ← `install` (find and
build binaries) ← `ui`, `llamacpp`, `ollama` (start one) ← `smoke` (build, then prove it runs here with those
starts) ← this package's `start` / `describe`, which dispatch by kind."""
from __future__ import annotations

from .base import PLACEHOLDER_KEY, Server
from .install import find_tool
from .kinds import KINDS, Kind, kind_of, port_of
from .llamacpp import describe as describe_llamacpp, start_llama_server
from .ollama import describe as describe_ollama, start_ollama
from .smoke import build_llama_cpp, build_ollama

_START = {"llamacpp": start_llama_server, "ollama": start_ollama}
_DESCRIBE = {"llamacpp": describe_llamacpp, "ollama": describe_ollama}
_BUILD = {"llamacpp": build_llama_cpp, "ollama": build_ollama}


def start(kind: str, **options) -> Server:
    """Start (or reuse) a server of `kind`; `options` go to start_llama_server / start_ollama. On a fresh machine
    its program is built first (and proven to run here) unless the options name a binary."""
    record = kind_of(kind)
    if not options.get("binary") and not find_tool(record.program):
        _BUILD[kind]()
    return _START[kind](**options)


def describe(kind: str, host: str, port: int) -> tuple[bool, str]:
    """(the lab's server of `kind` and healthy, what listens on host:port) — `labkit status` and doctor rows."""
    kind_of(kind)
    return _DESCRIBE[kind](host, port)


__all__ = ["KINDS", "Kind", "PLACEHOLDER_KEY", "Server", "describe", "kind_of", "port_of", "start",
           "start_llama_server", "start_ollama"]
