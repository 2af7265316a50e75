"""Starting and stopping `labkit lab` in tests: shared by the CLI tests and the browser test."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from labkit.home import subdir
from labkit.net import free_port, port_open


def named(procs: list[psutil.Process], name: str) -> bool:
    """Whether one of these processes (some may have ended meanwhile) is called `name`."""
    for p in procs:
        try:
            if p.name() == name:
                return True
        except psutil.Error:
            pass
    return False


def start_lab(tmp_path: Path, env: dict | None = None, *, sigint_ignored: bool = False,
              extra: tuple[str, ...] = ("--ServerApp.token=labtest",)) -> tuple[subprocess.Popen, int, Path]:
    """`labkit lab` as `make lab` runs it, on a free port; its output in tmp_path/lab.log. With `sigint_ignored`
    it starts the way `make lab &` in a script or nohup would: SIGINT ignored, inherited."""
    port = free_port()
    while 50050 <= port < 50060 or 8180 <= port < 8200:  # the course's fixed ports (RPC workers, replicas)
        port = free_port()
    log = tmp_path / "lab.log"
    with log.open("wb") as out:
        lab = subprocess.Popen([sys.executable, "-m", "labkit.cli", "lab", "--no-browser", f"--port={port}", *extra],
                               stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                               preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored
                               else None)
    return lab, port, log


def stop_lab(lab: subprocess.Popen, how: int = signal.SIGINT) -> None:
    """Ctrl-C (or `how`) to the lab; a lab that does not stop in time is killed, then the test fails on it."""
    if lab.poll() is None:
        lab.send_signal(how)
    try:
        lab.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(lab.pid, signal.SIGKILL)
        lab.wait(10)
        raise AssertionError(f"the lab did not stop within 60 s of signal {how}") from None


def wait_for_lesson_00(lab: subprocess.Popen, port: int, log: Path, timeout: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
        assert lab.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
    return httpx.get(f"http://127.0.0.1:{port}/lab/tree/00_welcome.ipynb?token=labtest", timeout=30)


def wait_for_lab_url(lab: subprocess.Popen, port: int, log: Path, timeout: float = 120) -> dict:
    """The lab's lab.json once it names lesson 00's URL on `port` and the lab has printed it. The lab writes the URL
    only after JupyterLab wrote its server file, which is after its port opened: reading it then is a race."""
    deadline = time.monotonic() + timeout
    while True:
        assert lab.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        path = subdir("run") / "lab.json"
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):  # not written yet, or caught mid-write
            info = {}
        url = info.get("url")
        if url and f":{port}/" in url and f"✔ lesson 00: {url}" in log.read_text():
            return info
        time.sleep(0.3)
