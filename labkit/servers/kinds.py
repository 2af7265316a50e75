"""One record per server kind: everything the rest of labkit needs to know about llama-server or Ollama.

    KINDS["llamacpp"].label, .port(), .health_path, .start(**options), .describe(host, port), .bench_extra

Session, CLI, lab, probe, widgets, bench and the health check read it here; nothing else lists the kinds.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


def _lazy(module: str, function: str) -> Callable[..., Any]:
    """`labkit.servers.<module>.<function>`, imported when first called (those modules import this one)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(f"labkit.servers.{module}"), function)(*args, **kwargs)
    call.__name__ = call.__qualname__ = function
    call.__doc__ = f"labkit.servers.{module}.{function}"
    return call


@dataclass(frozen=True)
class Kind:
    """A server kind: how to show it, where it listens, how to check, start and recognise it."""

    name: str                          # what `labkit.up(kind)` and `labkit up KIND` take
    label: str                         # what a learner reads
    default_port: int
    port_env: str                      # the environment variable that moves the lab's port
    health_path: str                   # 200 here means: ready to answer
    start: Callable[..., Any]          # start (or reuse) one; returns a labkit Server
    describe: Callable[[str, int], tuple[bool, str]]  # (ours and healthy, what listens on host:port)
    bench_extra: Mapping[str, Any] = field(default_factory=dict)  # request fields the benchmark adds

    def port(self) -> int:
        """The lab's port: the environment variable when set and not empty, else the usual one."""
        return int(os.environ.get(self.port_env) or self.default_port)


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("llamacpp", "llama.cpp", 8080, "LABKIT_LLAMACPP_PORT", "/health",
         _lazy("llamacpp", "start_llama_server"), _lazy("llamacpp", "describe"),
         bench_extra={"ignore_eos": True}),  # every request decodes exactly max_tokens
    Kind("ollama", "Ollama", 11434, "LABKIT_OLLAMA_PORT", "/",
         _lazy("ollama", "start_ollama"), _lazy("ollama", "describe")),
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
