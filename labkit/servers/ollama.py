"""Ollama: `ollama serve` on loopback with a private model store; the lab's GGUF registered by a Modelfile."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from ..errors import PortBusyError, ServerStartError
from ..home import subdir
from ..language import text
from ..models import check_gguf, check_model_name, model_name, model_path, same_model, sha256_of
from ..net import port_open
from ..procs import ManagedProcess
from .base import Server, wait_healthy
from .kinds import KINDS, port_of
from .install import require_tool

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['go_procs', 'log_path', 'modelfile_for', 'ollama_env']



def ollama_binary(explicit: str | os.PathLike | None = None) -> Path:
    """The ollama to run (a BinaryError saying how to get one when there is none: `servers.start` builds it first
    on a fresh machine)."""
    return require_tool("ollama", explicit)


def go_procs() -> str:
    """GOMAXPROCS for Ollama's Go code: the logical CPUs its compute threads leave free. Ollama decodes on as many
    threads as there are physical cores, so on a machine without SMT (a 2-vCPU VM) none are left, and Go's own
    threads (HTTP, JSON for every token, GC workers) preempt the compute threads, which then wait for each other
    at every barrier. Measured on 2 cores, interleaved: one stream decoded 94 tok/s with Go's default (2), 120
    with GOMAXPROCS=1 (llama-server: 110); 4 streams 154 vs 147 tok/s in all."""
    import psutil
    logical = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    return str(max(1, logical - physical))


def ollama_env(host: str, port: int) -> dict[str, str]:
    """Everything Ollama keeps (models, keys) stays under the labkit home; it listens on loopback only; and it
    stays private: without OLLAMA_NO_CLOUD, `ollama serve` (0.24) calls ollama.com at start for model
    recommendations and its cloud-model cache, whatever model you run."""
    return {**os.environ, "OLLAMA_HOST": f"{host}:{port}", "OLLAMA_MODELS": str(subdir("ollama", "models")),
            "HOME": str(subdir("ollama", "home")), "OLLAMA_NUM_PARALLEL": os.environ.get("OLLAMA_NUM_PARALLEL", "4"),
            "OLLAMA_KEEP_ALIVE": os.environ.get("OLLAMA_KEEP_ALIVE", "30m"),
            "OLLAMA_NO_CLOUD": os.environ.get("OLLAMA_NO_CLOUD", "1"),
            "GOMAXPROCS": os.environ.get("GOMAXPROCS", go_procs())}


def log_path(port: int) -> Path:
    """Where the Ollama that labkit starts on `port` writes its log (lessons read its config and runner lines)."""
    return subdir("logs") / f"ollama-{port}.log"


def is_ollama(host: str, port: int) -> str | None:
    """Ollama's version when host:port is an Ollama server, else None."""
    try:
        r = httpx.get(f"http://{host}:{port}/api/version", timeout=2)
        return r.json().get("version") if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def describe(host: str, port: int) -> tuple[bool, str]:
    """(an Ollama and healthy, what listens on host:port) — `labkit status` and `doctor` rows."""
    if not port_open(host, port):
        return False, f"nothing on {host}:{port}"
    version = is_ollama(host, port)
    return (bool(version), f"ollama {version} on :{port}") if version else (False, f"port {port} is not Ollama")


def has_model(server: Server, name: str) -> bool:
    r = httpx.get(server.base_url + "/api/tags", timeout=10)
    r.raise_for_status()
    return any(same_model(name, m["name"]) for m in r.json().get("models", []))


def upload_blob(server: Server, path: Path, digest: str | None = None) -> str:
    """A file as an Ollama blob (`POST /api/blobs/<digest>`, skipped when the server has it); its digest."""
    digest = digest or "sha256:" + sha256_of(path)
    url = f"{server.base_url}/api/blobs/{digest}"
    if httpx.head(url, timeout=30).status_code != 200:
        with path.open("rb") as f:
            httpx.post(url, content=f, timeout=300).raise_for_status()
    return digest


def create_from_files(server: Server, name: str, files: dict[str, str], *, timeout: float = 600) -> None:
    """Ollama's `/api/create` from uploaded blobs {file name: digest} (safetensors are converted to GGUF)."""
    r = httpx.post(f"{server.base_url}/api/create", json={"model": name, "files": files, "stream": False},
                   timeout=timeout)
    if r.status_code != 200:
        raise ServerStartError(f"Ollama could not create '{name}' (HTTP {r.status_code}): {r.text[:400]}",
                               fix="Read the Ollama log below.", log_tail=server.log_tail())


def modelfile_for(gguf: Path, *, num_ctx: int = 4096, num_predict: int = 512) -> str:
    """The Modelfile the lesson shows: FROM the GGUF (Ollama takes the chat template from its metadata), and a
    default output cap: Ollama's own default is unlimited, so a request whose cap it ignores (`/v1` with
    `max_completion_tokens`) would otherwise generate until the context is full — and beyond, by shifting it."""
    return f"FROM {gguf}\nPARAMETER num_ctx {num_ctx}\nPARAMETER num_predict {num_predict}\n"


def modelfile_path(name: str) -> Path:
    return subdir("ollama") / f"{name}.Modelfile"


def registered_as_wanted(server: Server, name: str, gguf: Path) -> bool:
    """Registered, and from the Modelfile we would write now (a changed Modelfile means re-create)."""
    mf = modelfile_path(name)
    return has_model(server, name) and mf.is_file() and mf.read_text() == modelfile_for(gguf)


def register_model(server: Server, name: str, gguf: Path, binary: Path, *, timeout: float = 300) -> None:
    """`ollama create NAME -f Modelfile` against this server (copies the GGUF into Ollama's blob store once)."""
    mf = modelfile_path(name)
    pending = mf.with_suffix(".pending")
    pending.write_text(modelfile_for(gguf))
    proc = subprocess.run([str(binary), "create", name, "-f", str(pending)], env=ollama_env(server.host, server.port),
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ServerStartError(text(f"`ollama create {name}` failed (exit {proc.returncode}).",
                                    f"`ollama create {name}` 失败（退出码 {proc.returncode}）。"),
                               fix=text("Is the GGUF valid? Read the output below.",
                                        "GGUF 模型文件是否有效？请阅读下面的输出。"),
                               log_tail=(proc.stdout + proc.stderr)[-3000:])
    pending.replace(mf)  # only a successful create counts as registered


def warm(server: Server, *, timeout: float = 120) -> None:
    """Load the model now (an empty generate), so the first lesson request doesn't pay for it."""
    r = httpx.post(server.base_url + "/api/generate", json={"model": server.model, "keep_alive": "30m"},
                   timeout=timeout)
    if r.status_code != 200:
        raise ServerStartError(text(f"Ollama could not load '{server.model}' (HTTP {r.status_code}): {r.text[:500]}",
                                    f"Ollama 无法加载 '{server.model}'（HTTP {r.status_code}）：{r.text[:500]}"),
                               fix=text("Read the server log below.", "请阅读下面的服务日志。"),
                               log_tail=server.log_tail())


def derive_model(server: Server, name: str, *, timeout: float = 120, **parameters) -> str:
    """`name` = the server's model with some PARAMETERs changed (`/api/create` with `from`; Ollama merges them
    into the base's and shares its weights). For a setting the OpenAI-compatible `/v1` can't send per request,
    e.g. `num_thread` so a benchmark runs Ollama on the same threads as llama-server."""
    r = httpx.post(server.base_url + "/api/create", timeout=timeout,
                   json={"model": name, "from": server.model, "parameters": parameters, "stream": False})
    if r.status_code != 200:
        raise ServerStartError(text(f"Ollama could not create '{name}' from '{server.model}' (HTTP {r.status_code}): "
                                    f"{r.text[:300]}",
                                    f"Ollama 无法从 '{server.model}' 创建 '{name}'（HTTP {r.status_code}）："
                                    f"{r.text[:300]}"),
                               fix=text("Read the server log below.", "请阅读下面的服务日志。"),
                               log_tail=server.log_tail())
    return name


def remove_model(base_url: str, name: str, *, timeout: float = 60) -> bool:
    """`ollama rm NAME` over HTTP (DELETE /api/delete); True when it was there. Shared weights stay."""
    r = httpx.request("DELETE", base_url.rstrip("/") + "/api/delete", json={"model": name}, timeout=timeout)
    return r.status_code == 200


def start_ollama(*, port: int | None = None, host: str = "127.0.0.1", model: str | None = None,
                 gguf: str | os.PathLike | None = None, binary: str | os.PathLike | None = None,
                 reuse: bool = True, timeout: float | None = None, detached: bool = False) -> Server:
    """Start `ollama serve` (or reuse an Ollama on `port`), make sure the lab's model is registered and loaded."""
    port = int(port or port_of("ollama"))
    model = check_model_name(model or model_name())
    timeout = timeout or float(os.environ.get("LABKIT_START_TIMEOUT", 120))
    binary_path = ollama_binary(binary)
    if port_open(host, port):
        if not (reuse and is_ollama(host, port)):
            raise PortBusyError(text(f"Port {port} on {host} is taken by something that is not Ollama.",
                                     f"{host} 的端口 {port} 被占用，占用它的不是 Ollama。"),
                                fix=text(f"Stop it (`ss -ltnp 'sport = :{port}'` finds it) or set "
                                         f"{KINDS['ollama'].port_env}.",
                                         f"停掉它（用 `ss -ltnp 'sport = :{port}'` 可以找到），或者设置 "
                                         f"{KINDS['ollama'].port_env} 换一个端口。"))
        server = Server("ollama", host, port, model)
    else:
        log = log_path(port)
        proc = ManagedProcess([str(binary_path), "serve"], log_path=log, env=ollama_env(host, port),
                              tie_to_parent=not detached)
        server = Server("ollama", host, port, model, proc=proc, log_path=log)
        wait_healthy(server, timeout=timeout, what=f"ollama serve on port {port}")
    try:
        gguf = check_gguf(Path(gguf)) if gguf else model_path()
        if not registered_as_wanted(server, model, gguf):
            register_model(server, model, gguf, binary_path)
        warm(server, timeout=timeout)
    except Exception:
        server.stop()
        raise
    return server
