"""A kernel's side of a running lab (`make lab`): is this kernel inside one, and ask it for its server of a kind.

The lab (labkit.lab, the runner) listens on a Unix socket whose path is in LABKIT_LAB; a kernel sends one JSON
line `{"kind": ...}` and gets back the server as `server_record` describes it. This module is the whole protocol,
so the session layer (`labkit.up`) needs nothing of the runner above it."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from .errors import LabkitError
from .servers import Server

ENV = "LABKIT_LAB"


def in_lab() -> bool:
    path = os.environ.get(ENV)
    return bool(path) and Path(path).exists()


def server_record(server: Server) -> dict:
    """A server as the lab sends it over the socket (and `ask` reads it back)."""
    return {"kind": server.kind, "host": server.host, "port": server.port, "model": server.model,
            "api_key": server.api_key, "log_path": str(server.log_path) if server.log_path else None}


def ask(kind: str, *, timeout: float | None = None) -> Server:
    """The lab's server of `kind` (the lab starts it if needed). The wait covers the longest the lab itself may
    take: waiting for the background build, building (bounded at an hour) and starting."""
    timeout = timeout or (float(os.environ.get("LABKIT_BUILD_WAIT", 1800)) + 3600 +
                          float(os.environ.get("LABKIT_START_TIMEOUT", 120)) + 60)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.environ[ENV])
            sock.sendall((json.dumps({"kind": kind}) + "\n").encode())
            answer = json.loads(sock.makefile("r").readline() or "{}")
        except (OSError, ValueError) as exc:
            raise LabkitError(f"The lab (socket {os.environ.get(ENV)}) did not answer: {exc}.",
                              fix="Is `make lab` still running? Restart the kernel after restarting the lab.") from exc
    if not answer.get("ok"):
        raise LabkitError(f"The lab could not start {kind}: {answer.get('error', 'no answer')}")
    info = answer["server"]
    return Server(info["kind"], info["host"], info["port"], info["model"], api_key=info["api_key"],
                  log_path=Path(info["log_path"]) if info["log_path"] else None)
