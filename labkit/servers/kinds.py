"""One record per server kind: what the rest of labkit needs to know about llama-server or Ollama.

    KINDS["llamacpp"].label, .port(), .health_path, .program, .bench_extra

Session, CLI, lab, probe, widgets, bench and the health check read it here; nothing else lists the kinds. The
record is data only, so the modules that start a kind can read it: `servers.start(kind)` and
`servers.describe(kind, …)` (the package's top) dispatch to llamacpp.py / ollama.py.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Kind:
    """A server kind: how to show it, where it listens, how to check it, which program serves it."""

    name: str                          # what `labkit.up(kind)` and `labkit up KIND` take
    label: str                         # what a learner reads
    default_port: int
    port_env: str                      # the environment variable that moves the lab's port
    health_path: str                   # 200 here means: ready to answer
    program: str                       # the binary that serves it (what `labkit setup` builds)
    bench_extra: Mapping[str, Any] = field(default_factory=dict)  # request fields the benchmark adds

    def port(self) -> int:
        """The lab's port: the environment variable when set and not empty, else the usual one."""
        return int(os.environ.get(self.port_env) or self.default_port)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("llamacpp", "llama.cpp", 8080, "LABKIT_LLAMACPP_PORT", "/health", "llama-server",
         bench_extra={"ignore_eos": True}),  # every request decodes exactly max_tokens
    Kind("ollama", "Ollama", 11434, "LABKIT_OLLAMA_PORT", "/", "ollama"),
)}


def kind_of(name: str) -> Kind:
    """The record of a kind, or a ValueError that lists the kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"kind must be one of {tuple(KINDS)}, not {name!r}") from None


def port_of(kind: str) -> int:
    """The lab's port for a server kind (see `Kind.port`)."""
    return kind_of(kind).port()
