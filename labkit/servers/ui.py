"""llama-server's web UI, built with npm from the Svelte source in the same llama.cpp sdist and served with
`llama-server --path <folder>`. (The sdist's own build would download prebuilt assets from a model hub, which the
lab cannot reach, so the binary is built without them and the UI lives in a folder of the labkit home.)

Until the UI is built that folder holds one page saying so; a finished build is moved into the same folder, so a
llama-server started before serves the real UI on the next reload (it reads the files at each request)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from ..errors import BinaryError
from ..home import home, subdir
from ..procs import run_logged, tail
from .install import LLAMA_CPP_VERSION, _check_disk, build_lock, build_log, llama_cpp_source

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['ui_built', 'ui_dir']

STAMP = "labkit-ui.json"
NODE_MIN = (20, 19)  # what the UI's vite 7 needs
PLACEHOLDER = """<!doctype html><meta charset="utf-8"><title>llama-ui: still building</title>
<body style="font-family: sans-serif; max-width: 40em; margin: 4em auto">
<h1>llama.cpp's web UI is still being built</h1>
<p>The lab builds it with npm from llama.cpp's source (about 3 minutes on 2 cores), behind JupyterLab.
<code>labkit status</code> shows the progress; reload this page when its <b>web-ui</b> row is done.</p>
<p>The server itself is up: <a href="health">/health</a>, <a href="v1/models">/v1/models</a>, <a href="props">/props</a>.</p>
</body>
"""


def ui_dir() -> Path:
    """The folder `--path` points at: the built UI, or the one page that says it is being built."""
    path = subdir("ui", LLAMA_CPP_VERSION)
    if not (path / "index.html").is_file():
        tmp = path / f".index.{os.getpid()}.html"
        tmp.write_text(PLACEHOLDER, encoding="utf-8")
        tmp.replace(path / "index.html")
    return path


def install_into(dist: Path, folder: Path) -> None:
    """Move a finished build into the served folder, in place: llama-server resolved that folder's real path when
    it started and refuses files outside it (403), so the folder stays and its contents change. index.html goes
    last (the page switches in one rename), the stamp after it."""
    last = ("index.html", STAMP)
    for entry in dist.iterdir():
        if entry.name not in last:
            dest = folder / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            entry.replace(dest)
    for name in last:
        (dist / name).replace(folder / name)


def ui_built() -> dict | None:
    """The stamp of a finished UI build (None while only the placeholder is there)."""
    try:
        return json.loads((home() / "ui" / LLAMA_CPP_VERSION / STAMP).read_text())  # reads, creates nothing
    except (OSError, ValueError):
        return None


def node_version(node: str) -> tuple[int, ...]:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    m = re.match(r"v(\d+)\.(\d+)", out.strip())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def check_assets(dist: Path) -> list[str]:
    """What a UI build must contain to work (the same list llama.cpp's cmake checks); returns what is missing."""
    need = {"index.html": dist / "index.html", "_app/version.json": dist / "_app" / "version.json",
            "bundle*.js": next((dist / "_app" / "immutable").glob("bundle*.js"), None),
            "bundle*.css": next((dist / "_app" / "immutable" / "assets").glob("bundle*.css"), None)}
    return [name for name, path in need.items() if path is None or not Path(path).is_file()]


def build_ui(*, timeout: float = 1800) -> Path:
    """npm ci + npm run build of `tools/ui` from the llama.cpp sdist into the labkit home; node_modules (~700 MB)
    is deleted afterwards, the built UI (~10 MB) kept."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        raise BinaryError("npm/node are not installed; llama-server's web UI is built with them.",
                          fix="Install Node.js ≥ 20.19 with npm (Debian: apt-get install nodejs npm).")
    if node_version(node) < NODE_MIN:
        raise BinaryError(f"Node {'.'.join(map(str, node_version(node)))} is too old for llama.cpp's web UI "
                          f"(vite 7 needs ≥ {'.'.join(map(str, NODE_MIN))}).", fix="Install a newer Node.js.")
    log = build_log("llama-ui")
    with build_lock("llama-ui"):
        if ui_built():
            return ui_dir()
        _check_disk("llama-ui")  # node_modules is ~700 MB while it builds
        log.unlink(missing_ok=True)
        work = subdir("build") / f"ui-{LLAMA_CPP_VERSION}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(llama_cpp_source() / "tools" / "ui", work)
        dist = work / "dist"
        env = {**os.environ, "LLAMA_UI_OUT_DIR": str(dist), "CI": "true"}
        started = time.monotonic()
        try:
            for argv in ([npm, "ci", "--no-audit", "--no-fund"], [npm, "run", "build"]):
                rc = run_logged(argv, cwd=work, env=env, log_path=log, timeout=timeout, append=True)
                if rc != 0:
                    raise BinaryError(f"`{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(argv))}` "
                                      f"failed for llama-server's web UI (exit {rc}).", log_tail=tail(log, 20),
                                      fix=f"Read {log}; `labkit setup --only web-ui` tries again.")
            missing = check_assets(dist)
            if missing:
                raise BinaryError(f"The web UI build finished without {', '.join(missing)}.",
                                  log_tail=tail(log, 20), fix=f"Read {log}.")
            (dist / STAMP).write_text(json.dumps({
                "llama_cpp": LLAMA_CPP_VERSION, "node": ".".join(map(str, node_version(node))),
                "seconds": round(time.monotonic() - started), "built_at": time.time()}))
            install_into(dist, ui_dir())  # a running llama-server serves it on the next reload
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return ui_dir()
