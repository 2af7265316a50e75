"""The package registries the setup downloads from, which address each step will use (a mirror, when one is set),
and a bounded check that one answers — so a slow or unreachable registry is a clear message naming the variable to
set, never a hang. From mainland China the usual mirrors are named in README.zh-CN.md."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from .errors import LabkitError
from .language import text


@dataclass(frozen=True)
class Registry:
    name: str
    variable: str            # the variable its client reads: the place to name a mirror
    default: str
    mirror: str              # a widely used mirror in mainland China, as the example in messages
    steps: tuple[str, ...]   # the `labkit setup` steps that download from it
    config: tuple[str, ...] = ()  # the client's own command that prints the address it uses


REGISTRIES = (
    Registry("PyPI", "PIP_INDEX_URL", "https://pypi.org/simple", "https://pypi.tuna.tsinghua.edu.cn/simple",
             ("model", "llama-server", "embedding-model"),
             (sys.executable, "-m", "pip", "config", "get", "global.index-url")),
    Registry("Go module proxy", "GOPROXY", "https://proxy.golang.org", "https://goproxy.cn,direct",
             ("ollama", "go"), ("go", "env", "GOPROXY")),
    Registry("npm", "npm_config_registry", "https://registry.npmjs.org/", "https://registry.npmmirror.com",
             ("web-ui", "newman"), ("npm", "config", "get", "registry")),
)


def for_step(step: str) -> Registry | None:
    return next((r for r in REGISTRIES if step in r.steps), None)


def address(registry: Registry, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(the address this registry's client will use, where that comes from: the variable, its config, default)."""
    env = os.environ if env is None else env
    if env.get(registry.variable):
        return env[registry.variable], registry.variable
    if registry.config and shutil.which(registry.config[0]):
        try:
            out = subprocess.run(registry.config, capture_output=True, text=True, timeout=10, env=dict(env))
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip(), f"`{' '.join(registry.config)}`"
        except (OSError, subprocess.TimeoutExpired):
            pass
    return registry.default, "default"


def first_url(value: str) -> str | None:
    """The URL a client tries first (GOPROXY is a list: 'https://goproxy.cn,direct'); None for off/direct."""
    for part in value.replace("|", ",").split(","):
        if part.strip().startswith(("http://", "https://")):
            return part.strip()
    return None


def answers(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    """(whether the registry at `url` answers within `timeout`, what was seen): any HTTP reply below 500 counts."""
    started = time.monotonic()
    try:
        r = httpx.head(url, timeout=timeout, follow_redirects=True)
    except httpx.TimeoutException:
        return False, f"no answer within {timeout:.0f} s"
    except httpx.HTTPError as exc:
        return False, f"unreachable ({type(exc).__name__})"
    seconds = time.monotonic() - started
    return r.status_code < 500, f"HTTP {r.status_code} in {seconds:.1f} s"


def ensure_answers(registry: Registry, *, timeout: float = 10.0, env: Mapping[str, str] | None = None) -> None:
    """Raise an error naming the variable to set when `registry` does not answer (setup asks after a download
    failed, so a step that needs no download works offline)."""
    value, where = address(registry, env)
    url = first_url(value)
    if url is None:
        return  # GOPROXY=off or direct: the learner chose; the step's own error will say what failed
    ok, seen = answers(url, timeout)
    if ok:
        return
    raise LabkitError(
        text(f"{registry.name} does not answer at {url} ({seen}; address from {where}).",
             f"{registry.name} 在 {url} 没有响应（{seen}；地址来自 {where}）。", env),
        fix=text(f"Point {registry.variable} at a registry you can reach, e.g. "
                 f"export {registry.variable}={registry.mirror} — then run the same command again.",
                 f"把 {registry.variable} 指向能访问的镜像，例如 export {registry.variable}={registry.mirror}，"
                 f"然后重新运行同一条命令。", env))


def doctor_rows(env: Mapping[str, str] | None = None, timeout: float = 5.0) -> list[tuple[str, str, str, str]]:
    """(mark, check, found, fix) rows for `labkit doctor`: each registry, the address its steps will use, and
    whether it answers now (the three asked at once: the doctor waits `timeout` at most, not three times it)."""
    def row(registry: Registry) -> tuple[str, str, str, str]:
        value, where = address(registry, env)
        url = first_url(value)
        ok, seen = answers(url, timeout) if url else (True, "not checked")
        return ("✔" if ok else "✘", f"registry: {registry.name}",
                f"{value} ({where}; {seen}) — for {', '.join(registry.steps)}",
                "" if ok else f"export {registry.variable}={registry.mirror}")
    with ThreadPoolExecutor(len(REGISTRIES)) as pool:
        return list(pool.map(row, REGISTRIES))
