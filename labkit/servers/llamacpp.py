"""llama.cpp's llama-server: start it on the lab's model, or reuse the one already serving that model name."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import httpx
import psutil

from ..cpu import llama_cpp_env
from ..errors import PortBusyError, ServerMismatchError, ServerStartError
from ..home import subdir
from ..language import text
from ..models import check_gguf, check_model_name, model_name, model_path
from ..net import port_open
from ..procs import ManagedProcess
from .base import Server, wait_healthy
from .kinds import KINDS, port_of
from .install import require_tool
from .ui import ui_dir

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['llama_server_argv', 'llama_server_binary', 'start_router']



def llama_server_binary(explicit: str | os.PathLike | None = None) -> Path:
    """The llama-server to run (a BinaryError saying how to get one when there is none: `servers.start` builds
    it first on a fresh machine)."""
    return require_tool("llama-server", explicit)


def identify(host: str, port: int, api_key: str | None = None) -> dict | None:
    """What llama-server answers on host:port (its /v1/models), or None if it is not a llama-server."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        props = httpx.get(f"http://{host}:{port}/props", timeout=2, headers=headers)
        models = httpx.get(f"http://{host}:{port}/v1/models", timeout=2, headers=headers)
    except httpx.HTTPError:
        return None
    if props.status_code != 200 or models.status_code != 200 or "default_generation_settings" not in props.text:
        return None
    try:
        return {"props": props.json(), "models": [m["id"] for m in models.json()["data"]]}
    except (ValueError, KeyError):
        return None


# Flags read from /props on any llama-server (so not compared again on the command line), and flags that say
# where a server is rather than how it behaves.
_FROM_PROPS = {"--model", "--alias", "--ctx-size", "--parallel", "--seed", "--api-key"}
_PLACE = {"--host", "--port", "--path"}
_LONG = {"-m": "--model", "-a": "--alias", "-c": "--ctx-size", "-np": "--parallel", "-s": "--seed",
         "-t": "--threads", "-fa": "--flash-attn"}


def flags(argv: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """A llama-server command line as {flag: its values} (short flags spelt long; the program itself dropped)."""
    found: dict[str, tuple[str, ...]] = {}
    flag = None
    for token in argv[1:]:
        if token.startswith("-") and not token[1:2].isdigit():
            flag, _, value = token.partition("=")
            flag = _LONG.get(flag, flag)
            found[flag] = (value,) if value else ()
        elif flag is not None:
            found[flag] += (token,)
    return found


def argv_differences(wanted: Sequence[str], running: Sequence[str]) -> list[str]:
    """The behaviour flags two command lines do not share (`--embeddings`, `--reasoning-format none`, threads, ...).
    What /props already shows (model, context, slots, seed, key) and where the server listens are left out."""
    a, b = flags(wanted), flags(running)
    out = []
    for flag in sorted((a.keys() | b.keys()) - _FROM_PROPS - _PLACE):
        if flag == "--threads" and flag not in a:
            continue  # not asked for: any thread count will do
        if a.get(flag) != b.get(flag):
            asked = " ".join((flag,) + a[flag]) if flag in a else f"no {flag}"
            runs = " ".join((flag,) + b[flag]) if flag in b else f"no {flag}"
            out.append(f"asked for {asked}, it runs with {runs}")
    return out


def props_differences(props: dict, *, gguf: Path, ctx_size: int, parallel: int, seed: int | None) -> list[str]:
    """What /props of a running llama-server says differs from the options asked for."""
    out = []
    slots = props.get("total_slots")
    per_slot = props.get("default_generation_settings", {}).get("n_ctx")
    running_seed = props.get("default_generation_settings", {}).get("params", {}).get("seed")
    if props.get("model_path") and Path(props["model_path"]).resolve() != Path(gguf).resolve():
        out.append(f"asked for the GGUF {gguf}, it runs {props['model_path']}")
    if slots is not None and slots != parallel:
        out.append(f"asked for parallel={parallel}, it has {slots} slots")
    if per_slot is not None and slots and per_slot * slots != ctx_size and per_slot != ctx_size // parallel:
        out.append(f"asked for ctx_size={ctx_size}, it runs with {per_slot * slots} ({per_slot} per slot)")
    if seed is not None and running_seed is not None and running_seed != seed:
        out.append(f"asked for seed={seed}, it runs with seed {running_seed}")
    return out


def listening_process(port: int) -> psutil.Process | None:
    """The process listening on this TCP port, when this user may see it (else None: the check falls back)."""
    try:
        for conn in psutil.net_connections("tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    except (psutil.Error, OSError):
        pass
    return None


def reuse_differences(host: str, port: int, found: dict, wanted_argv: Sequence[str], *, gguf: Path, ctx_size: int,
                      parallel: int, seed: int | None, api_key: str | None) -> list[str]:
    """Every way the llama-server on host:port would behave differently from the one these options start."""
    out = props_differences(found["props"], gguf=gguf, ctx_size=ctx_size, parallel=parallel, seed=seed)
    if api_key and identify(host, port) is not None:
        out.append("asked for an API key, it answers requests without one")
    proc = listening_process(port)
    try:
        running = proc.cmdline() if proc else None
    except psutil.Error:
        running = None
    if running:
        out += argv_differences(wanted_argv, running)
    elif flags(wanted_argv).keys() - _FROM_PROPS - _PLACE - {"--jinja"}:
        out.append("its command line cannot be read here, so its flags cannot be compared with the ones asked for")
    return out


def describe(host: str, port: int) -> tuple[bool, str]:
    """(the lab's llama-server and healthy, what listens on host:port) — `labkit status` and `doctor` rows."""
    if not port_open(host, port):
        return False, f"nothing on {host}:{port}"
    found = identify(host, port)
    if found:
        return model_name() in found["models"], f"llama-server on :{port} serving {found['models']}"
    return False, f"port {port} taken by something that is not llama-server (or wants an API key)"


def llama_server_argv(binary: Path, gguf: Path, *, host: str = "127.0.0.1", port: int = KINDS["llamacpp"].default_port,
                      model: str = "smollm2-135m", ctx_size: int = 4096, parallel: int = 4,
                      threads: int | None = None, api_key: str | None = None, seed: int | None = 42,
                      ui: Path | None = None, extra_args: Sequence[str] = ()) -> list[str]:
    """The exact command line the lab runs: what you would type to start the same server yourself."""
    argv = [str(binary), "--model", str(gguf), "--host", host, "--port", str(port), "--alias", model,
            "--ctx-size", str(ctx_size), "--parallel", str(parallel), "--jinja"]
    if ui:
        argv += ["--path", str(ui)]  # the web UI's files (labkit.servers.ui): served at /
    if threads:
        argv += ["--threads", str(threads)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    if api_key:
        argv += ["--api-key", api_key]
    return argv + list(extra_args)


def start_llama_server(*, port: int | None = None, host: str = "127.0.0.1", model: str | None = None,
                       gguf: str | os.PathLike | None = None, ctx_size: int = 4096, parallel: int = 4,
                       threads: int | None = None, api_key: str | None = None, seed: int | None = 42,
                       extra_args: Sequence[str] = (), binary: str | os.PathLike | None = None,
                       ui: bool = True, reuse: bool = True, timeout: float | None = None, detached: bool = False) -> Server:
    """Start llama-server on `gguf` (default: the lab's model), serving it under the name `model` (llama-server's
    `--alias`; default: the lab's model name), or reuse a healthy one serving `model` on `port`; wait until it is
    healthy. With `ui` it serves llama.cpp's web UI at / (the page saying it is still being built, until it is)."""
    port = int(port or port_of("llamacpp"))
    model = check_model_name(model or model_name())
    timeout = timeout or float(os.environ.get("LABKIT_START_TIMEOUT", 120))
    gguf = check_gguf(Path(gguf)) if gguf else model_path()

    def argv_for(binary_path: Path) -> list[str]:
        return llama_server_argv(binary_path, gguf, host=host, port=port, model=model, ctx_size=ctx_size,
                                 parallel=parallel, threads=threads, api_key=api_key, seed=seed,
                                 ui=ui_dir() if ui else None, extra_args=extra_args)

    if port_open(host, port):
        found = identify(host, port, api_key)
        if reuse and found and model in found["models"]:
            differences = reuse_differences(host, port, found, argv_for(Path("llama-server")), gguf=gguf,
                                            ctx_size=ctx_size, parallel=parallel, seed=seed, api_key=api_key)
            if not differences:
                return Server("llamacpp", host, port, model, api_key=api_key)
            raise ServerMismatchError(
                text(f"The llama-server on {host}:{port} serves '{model}' but not with the options asked for: ",
                     f"{host}:{port} 上的 llama-server 提供模型 '{model}'，但启动选项与要求的不同：")
                + "; ".join(differences) + ".", differences=differences,
                fix=text(f"labkit.up() restarts a server this process started. This one belongs to another process "
                         f"(the lab, a test session, `labkit up`, or yours): stop it (`labkit down` stops what "
                         f"`labkit up` started), or start yours beside it on another port: port={port + 10}.",
                         f"labkit.up() 会重启本进程自己启动的服务；这个服务属于另一个进程（lab、测试会话、"
                         f"`labkit up` 或你自己）：先停掉它（`labkit down` 停止 `labkit up` 启动的服务），"
                         f"或者在另一个端口上启动你的服务：port={port + 10}。"))
        what = (f"llama-server serving {found['models']}" if found else "something that is not llama-server"
                " (or one that wants a different API key)")
        raise PortBusyError(
            text(f"Port {port} on {host} is taken by {what}; it does not serve '{model}'.",
                 f"{host} 的端口 {port} 已被占用（{what}），它不提供模型 '{model}'。"),
            fix=text(f"Stop that process (`labkit down`, or `ss -ltnp 'sport = :{port}'` to find it), "
                     f"or use another port: {KINDS['llamacpp'].port_env}=<port>.",
                     f"停掉那个进程（`labkit down`，或用 `ss -ltnp 'sport = :{port}'` 找到它），"
                     f"或者换一个端口：{KINDS['llamacpp'].port_env}=<port>。"))
    argv = argv_for(llama_server_binary(binary))
    log = subdir("logs") / f"llama-server-{port}.log"
    server = Server("llamacpp", host, port, model, api_key=api_key,
                    proc=ManagedProcess(argv, log_path=log, env=llama_cpp_env(), tie_to_parent=not detached),
                    log_path=log)
    wait_healthy(server, timeout=timeout, what=f"llama-server on port {port}")
    return server


def start_router(models_dir: str | os.PathLike, *, port: int, host: str = "127.0.0.1", models_max: int = 2,
                 ctx_size: int = 2048, parallel: int = 1, extra_args: Sequence[str] = (),
                 binary: str | os.PathLike | None = None, timeout: float | None = None) -> Server:
    """llama-server in router mode: no model of its own, every GGUF in `models_dir` served by name. The request's
    `model` chooses; the router starts one llama-server child per loaded model (at most `models_max`, least
    recently used unloaded first), passing it these options. Stopped with this process, children included."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ServerStartError(f"{models_dir} is not a folder of GGUF files.", fix="Pass the folder that holds them.")
    if port_open(host, port):
        raise PortBusyError(f"Port {port} on {host} is taken.", fix="Stop that process or pass another port.")
    argv = [str(llama_server_binary(binary)), "--models-dir", str(models_dir), "--models-max", str(models_max),
            "--host", host, "--port", str(port), "--ctx-size", str(ctx_size), "--parallel", str(parallel),
            "--jinja", "--no-ui", *extra_args]
    log = subdir("logs") / f"llama-router-{port}.log"
    server = Server("llamacpp", host, port, "router", proc=ManagedProcess(argv, log_path=log, env=llama_cpp_env()),
                    log_path=log)
    wait_healthy(server, timeout=timeout or 60, what=f"llama-server router on port {port}")
    return server
