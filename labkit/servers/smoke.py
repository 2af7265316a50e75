"""Smoke tests: a freshly built binary loads the embedded model and generates a token on this CPU, or we learn
exactly how it died (the signal, and the faulting instruction when the kernel log shows it)."""
from __future__ import annotations

import json
import re
import signal
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx

from ..cpu import Cpu
from ..errors import LabkitError
from ..home import subdir
from ..language import text
from ..models import EMBEDDED, fetch_embedded
from ..net import free_port
from ..procs import ManagedProcess
from .base import Server, wait_healthy

TIMEOUT = 120.0


@dataclass
class Smoke:
    """What a smoke test showed: the checks that passed, or the failure (with the signal when one killed it)."""

    ok: bool
    passed: list[str] = field(default_factory=list)
    error: str = ""
    signal: str | None = None
    log_tail: str = ""

    def failure(self) -> str:
        how = text(f"died with {self.signal}", f"因 {self.signal} 崩溃") if self.signal else text("failed", "失败")
        trap = kernel_trap() if self.signal == "SIGILL" else None
        return text(f"{how}: {self.error}", f"{how}：{self.error}") + \
            (text(f" (kernel log: {trap})", f"（内核日志：{trap}）") if trap else "")

    def stamp(self, cpu: Cpu) -> dict:
        return {"passed": self.passed, "cpu": cpu.to_json(),
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def signal_of(returncode: int | None) -> str | None:
    """SIGILL for a process that exited with -4 (Python's way of saying "killed by signal 4")."""
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def signal_in(text: str) -> str | None:
    """The fatal signal named in a log or an error body: Go's `signal: illegal instruction`, or `SIGILL`."""
    words = {"illegal instruction": "SIGILL", "segmentation fault": "SIGSEGV", "bus error": "SIGBUS",
             "floating point exception": "SIGFPE", "aborted": "SIGABRT"}
    m = re.search(r"signal: ([a-z ]+)", text)
    if m and m.group(1).strip() in words:
        return words[m.group(1).strip()]
    m = re.search(r"\b(SIGILL|SIGSEGV|SIGBUS|SIGFPE)\b", text)
    return m.group(1) if m else None


def kernel_trap() -> str | None:
    """The kernel's last `trap invalid opcode` line, naming the binary and address; None when unreadable."""
    try:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [ln.strip() for ln in out.splitlines() if "invalid opcode" in ln]
    return lines[-1][:300] if lines else None


def _fail(error: str, *, returncode: int | None = None, text: str = "", log_tail: str = "") -> Smoke:
    return Smoke(ok=False, error=error, signal=signal_of(returncode) or signal_in(text + log_tail),
                 log_tail=log_tail or text[-3000:])


def smoke_llama_cpp(prefix: Path, *, timeout: float = TIMEOUT) -> Smoke:
    """llama-bench decodes one token with the compute kernels; llama-server loads the model and answers one
    token over HTTP. The other programs of the build are checked to be there."""
    from .install import LLAMA_CPP_TARGETS
    from .llamacpp import llama_server_argv
    bindir = prefix / "bin"
    missing = [name for name in LLAMA_CPP_TARGETS if not (bindir / name).is_file()]
    if missing:
        return _fail(text(f"the build has no {', '.join(missing)}", f"编译结果里没有 {', '.join(missing)}"))
    model = fetch_embedded(quiet=True)
    argv = [str(bindir / "llama-bench"), "-m", str(model), "-p", "0", "-n", "1", "-r", "1", "-o", "json"]
    try:
        bench = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return _fail(text(f"llama-bench did not finish within {timeout:.0f} s",
                          f"llama-bench 在 {timeout:.0f} 秒内没有运行完"))
    if bench.returncode != 0:
        return _fail(text(f"llama-bench exited with {bench.returncode}", f"llama-bench 退出，退出码 {bench.returncode}"),
                     returncode=bench.returncode,
                     text=bench.stderr)
    try:
        tok_s = json.loads(bench.stdout)[0]["avg_ts"]
    except (ValueError, LookupError):
        return _fail(text("llama-bench printed no result", "llama-bench 没有输出结果"), text=bench.stdout + bench.stderr)
    passed = [f"llama-bench 1 token ({tok_s:.0f} tok/s)"]
    port = free_port()
    server = Server("llamacpp", "127.0.0.1", port, EMBEDDED.name, log_path=subdir("logs") / "smoke-llama-server.log")
    server.proc = ManagedProcess(llama_server_argv(bindir / "llama-server", model, port=port, model=EMBEDDED.name,
                                                   ctx_size=256, parallel=1),
                                 log_path=server.log_path)  # type: ignore[arg-type]
    try:
        try:
            wait_healthy(server, timeout=timeout, what="llama-server (smoke test)")
        except LabkitError as exc:
            return _fail(exc.what, returncode=server.proc.returncode if server.proc else None,
                         log_tail=exc.log_tail)
        r = httpx.post(server.base_url + "/completion", json={"prompt": "Hello", "n_predict": 1}, timeout=timeout)
        if r.status_code != 200 or r.json().get("tokens_predicted", 0) < 1:
            return _fail(text(f"llama-server answered HTTP {r.status_code}: {r.text[:300]}",
                              f"llama-server 返回了 HTTP {r.status_code}：{r.text[:300]}"),
                         returncode=server.proc.returncode if server.proc else None, log_tail=server.log_tail())
        passed.append("llama-server /completion 1 token")
    except (httpx.HTTPError, ValueError) as exc:
        return _fail(text(f"llama-server stopped answering ({exc})", f"llama-server 不再响应（{exc}）"),
                     returncode=server.proc.returncode if server.proc else None, log_tail=server.log_tail())
    finally:
        server.stop()
    return Smoke(ok=True, passed=passed)


def smoke_ollama(prefix: Path, *, timeout: float = TIMEOUT) -> Smoke:
    """`ollama serve` on a spare port (the lab's model store), the embedded model registered, one token
    generated: the runner that computes is a child of the server, so its death shows as an error body."""
    from .ollama import log_path, ollama_env, register_model, registered_as_wanted
    binary = prefix / "bin" / "ollama"
    if not binary.is_file():
        return _fail(text("the build has no ollama binary", "编译结果里没有 ollama 可执行文件"))
    model = fetch_embedded(quiet=True)
    port = free_port()
    log = log_path(port)
    server = Server("ollama", "127.0.0.1", port, EMBEDDED.name, log_path=log,
                    proc=ManagedProcess([str(binary), "serve"], log_path=log, env=ollama_env("127.0.0.1", port)))
    try:
        try:
            wait_healthy(server, timeout=timeout, what="ollama serve (smoke test)")
            if not registered_as_wanted(server, EMBEDDED.name, model):
                register_model(server, EMBEDDED.name, model, binary, timeout=timeout)
        except LabkitError as exc:
            return _fail(exc.what, returncode=server.proc.returncode if server.proc else None,
                         log_tail=exc.log_tail)
        r = httpx.post(server.base_url + "/api/generate", timeout=timeout,
                       json={"model": EMBEDDED.name, "prompt": "Hello", "stream": False, "keep_alive": 0,
                             "options": {"num_predict": 1, "seed": 42}})
        if r.status_code != 200 or r.json().get("eval_count", 0) < 1:
            return _fail(text(f"Ollama answered HTTP {r.status_code}: {r.text[:300]}",
                              f"Ollama 返回了 HTTP {r.status_code}：{r.text[:300]}"), text=r.text,
                         log_tail=server.log_tail())
        return Smoke(ok=True, passed=["ollama serve: /api/generate 1 token"])
    except (httpx.HTTPError, ValueError) as exc:
        return _fail(text(f"ollama stopped answering ({exc})", f"ollama 不再响应（{exc}）"),
                     log_tail=server.log_tail())
    finally:
        server.stop()
