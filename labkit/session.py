"""`up()` for lessons: idempotent and fast when the server already runs; restarts one that died."""
from __future__ import annotations

import os

from . import labclient
from .errors import ServerMismatchError
from .room import room_server
from .servers import Server, kind_of, port_of, start

_servers: dict[tuple, Server] = {}


def up(kind: str = "llamacpp", *, export: bool = True, quiet: bool = False, **options) -> Server:
    """A healthy server of `kind` ("llamacpp" or "ollama"): the one this process started, one already running
    on the port (reused, left running), or a new one stopped when this process ends. Inside a lab (`make lab`),
    the lab's own server: it outlives this kernel and stops with the lab (options make it this kernel's own).
    With LABKIT_SERVER set (a workshop room, `labkit room`), the room's server with the key in LABKIT_KEY.

    `options` go to `start_llama_server` / `start_ollama` (port, model, gguf, api_key, extra_args, ...).
    With `export`, OPENAI_BASE_URL / OPENAI_API_KEY point at it so every OpenAI client finds it.
    """
    kind_of(kind)  # an unknown kind fails here, before anything starts
    key = (kind, tuple(sorted((k, str(v)) for k, v in options.items())))
    server = _servers.get(key)
    if server is None or not server.alive():
        if server is not None:
            server.stop()  # died or was killed: clean up, then start again
        if not options and os.environ.get("LABKIT_SERVER"):
            server = room_server(kind, os.environ["LABKIT_SERVER"], os.environ.get("LABKIT_KEY", ""))
        elif not options and labclient.in_lab():
            server = labclient.ask(kind)  # the lab owns it: it outlives this kernel, and stops with the lab
        else:
            server = _start_or_restart(kind, options)
        _servers[key] = server
    if export:
        server.export_env()
    if not quiet:
        print(f"✔ {server}")
    return server


def _start_or_restart(kind: str, options: dict) -> Server:
    """A server with exactly these options: one of ours on the same port with other options is stopped and
    started again; one that belongs to another process is refused (ServerMismatchError says what differs)."""
    try:
        return start(kind, **options)
    except ServerMismatchError as error:
        port = int(options.get("port") or port_of(kind))
        ours = [(k, s) for k, s in _servers.items() if k[0] == kind and s.owned and s.port == port]
        if not ours:
            raise error
        for key, server in ours:
            server.stop()
            del _servers[key]
        return start(kind, **options)


def down(kind: str | None = None) -> None:
    """Stop the servers this process started (all, or those of one kind)."""
    for key, server in list(_servers.items()):
        if kind is None or key[0] == kind:
            server.stop()
            del _servers[key]
