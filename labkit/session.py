"""`up()` for lessons: idempotent and fast when the server already runs; restarts one that died."""
from __future__ import annotations

from . import lab
from .servers import Server, kind_of, start

_servers: dict[tuple, Server] = {}


def up(kind: str = "llamacpp", *, export: bool = True, quiet: bool = False, **options) -> Server:
    """A healthy server of `kind` ("llamacpp" or "ollama"): the one this process started, one already running
    on the port (reused, left running), or a new one stopped when this process ends. Inside a lab (`make lab`),
    the lab's own server: it outlives this kernel and stops with the lab (options make it this kernel's own).

    `options` go to `start_llama_server` / `start_ollama` (port, model, gguf, api_key, extra_args, ...).
    With `export`, OPENAI_BASE_URL / OPENAI_API_KEY point at it so every OpenAI client finds it.
    """
    kind_of(kind)  # an unknown kind fails here, before anything starts
    key = (kind, tuple(sorted((k, str(v)) for k, v in options.items())))
    server = _servers.get(key)
    if server is None or not server.alive():
        if server is not None:
            server.stop()  # died or was killed: clean up, then start again
        if not options and lab.in_lab():
            server = lab.ask(kind)  # the lab owns it: it outlives this kernel, and stops with the lab
        else:
            server = start(kind, **options)
        _servers[key] = server
    if export:
        server.export_env()
    if not quiet:
        print(f"✔ {server}")
    return server


def down(kind: str | None = None) -> None:
    """Stop the servers this process started (all, or those of one kind)."""
    for key, server in list(_servers.items()):
        if kind is None or key[0] == kind:
            server.stop()
            del _servers[key]
