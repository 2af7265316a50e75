"""What both servers share: a handle with URLs and a model name, start/health/stop, reuse of a running one."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import httpx

from ..procs import ManagedProcess, tail, wait_until_ready
from .kinds import kind_of

PLACEHOLDER_KEY = "sk-local-placeholder"  # clients insist on a key; servers without --api-key ignore it


class Endpoint:
    """What clients need of anything the lab serves over HTTP (a model server, or nginx in front of one): its
    URLs, the key to send, and OpenAI clients pointed at it. Needs `host`, `port` and `key`."""

    host: str
    port: int

    @property
    def key(self) -> str:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """What OpenAI clients want as base_url: the server root plus /v1."""
        return self.base_url + "/v1"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def client(self, **kwargs):
        """An openai.OpenAI client pointed at this endpoint."""
        from openai import OpenAI
        return OpenAI(base_url=self.openai_base_url, api_key=self.key, **kwargs)

    def async_client(self, **kwargs):
        from openai import AsyncOpenAI
        return AsyncOpenAI(base_url=self.openai_base_url, api_key=self.key, **kwargs)


@dataclass
class Server(Endpoint):
    """A running server the lab talks to. `proc` is None when we reuse one somebody else started."""

    kind: str
    host: str
    port: int
    model: str
    api_key: str | None = None
    proc: ManagedProcess | None = None
    log_path: Path | None = None
    _on_stop: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def key(self) -> str:
        """The key to send: the real one when the server checks keys, else a placeholder."""
        return self.api_key or PLACEHOLDER_KEY

    @property
    def owned(self) -> bool:
        return self.proc is not None

    def env(self) -> dict[str, str]:
        """The variables every OpenAI client reads (openai-python, langchain-openai, the Agents SDK, ...)."""
        return {"OPENAI_BASE_URL": self.openai_base_url, "OPENAI_API_KEY": self.key, "LABKIT_MODEL_NAME": self.model}

    def export_env(self) -> dict[str, str]:
        os.environ.update(self.env())
        return self.env()

    def log_tail(self, lines: int = 25) -> str:
        if self.proc:
            return self.proc.log_tail(lines)
        return tail(self.log_path, lines) if self.log_path else "(server not started by this process; no log)"

    def alive(self) -> bool:
        """The process is running (when ours) and answers health checks."""
        if self.proc and not self.proc.alive():
            return False
        return health_ok(self)

    def stop(self) -> None:
        """Stop the server if this process started it; a reused server is left to its owner."""
        for hook in self._on_stop:
            hook()
        if self.proc:
            self.proc.stop()
            self.proc = None

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __str__(self) -> str:
        who = f"pid {self.proc.pid}" if self.proc else "reused"
        return f"{self.kind} at {self.openai_base_url} serving model '{self.model}' ({who})"


def health_ok(server: Server, timeout: float = 2.0) -> bool:
    try:
        r = httpx.get(server.base_url + kind_of(server.kind).health_path, timeout=timeout)
    except httpx.HTTPError:
        return False
    return r.status_code == 200



def wait_healthy(server: Server, *, timeout: float, what: str) -> None:
    """Poll health until 200; a process that died, or the deadline, stops the server and raises with its log."""
    wait_until_ready(server.proc, lambda: health_ok(server, timeout=1.0), timeout=timeout, what=what,
                     stop=server.stop, log_tail=server.log_tail,
                     fix="A large model loads slowly: raise the timeout (LABKIT_START_TIMEOUT), or read the log.")
