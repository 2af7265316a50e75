"""Child processes that cannot outlive the lab: own process group, stop = SIGTERM then SIGKILL, atexit,
and PR_SET_PDEATHSIG so even a kernel killed with SIGKILL takes its servers with it."""
from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .errors import ServerStartError
from .language import text

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['listener_env']

_PR_SET_PDEATHSIG = 1
_live: "weakref.WeakSet[ManagedProcess]" = weakref.WeakSet()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()  # own session and process group: one signal stops the server and its helpers
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, for error messages."""
    try:
        with Path(path).open("rb") as f:
            return b"".join(deque(f, maxlen=lines)).decode("utf-8", "replace").rstrip()
    except OSError:
        return "(no log)"


class ManagedProcess:
    """A subprocess whose output goes to a log file and which is always stopped by the lab that started it."""

    def __init__(self, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, tie_to_parent: bool = True) -> None:
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        # The pdeathsig is tied to the thread that forks: start from a thread that lives as long as we do.
        preexec = _die_with_parent if tie_to_parent and threading.current_thread() is threading.main_thread() \
            else os.setsid
        self.popen = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=dict(env) if env is not None else None,
                                      cwd=cwd, preexec_fn=preexec, close_fds=True)
        self.pid = self.popen.pid
        _live.add(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, lines: int = 25) -> str:
        self._log.flush()
        return tail(self.log_path, lines)

    def detach(self) -> None:
        """Leave the process running after we exit (for `labkit up`); `labkit down` stops it later."""
        _live.discard(self)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the whole process group, wait, then SIGKILL whatever is left, in the group or below it (a build
        step runs in a group of its own)."""
        below = _descendants(self.pid)
        if self.popen.poll() is None:
            _signal_group(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        # Helpers the server spawned in its group (e.g. Ollama's runners) go too.
        _signal_group(self.pid, signal.SIGKILL)
        for proc in below:
            try:
                proc.kill()
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._log.close()
        _live.discard(self)
        return self.popen.returncode


def wait_until_ready(proc: "ManagedProcess | None", ready: Callable[[], bool], *, timeout: float, what: str,
                     stop: Callable[[], object] | None = None, log_tail: Callable[[], str] | None = None,
                     fix: str = "") -> None:
    """Poll `ready()` until it is true — every start in the lab waits this way. If the process exits first, or
    the deadline passes, the process is stopped (`stop`, default proc.stop) and ServerStartError carries its log
    tail: nobody waits forever, and nothing half-started is left running."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    stop = stop or (proc.stop if proc else (lambda: None))
    log_tail = log_tail or (proc.log_tail if proc else (lambda: ""))
    while True:
        if proc and not proc.alive():
            code, log = proc.returncode, log_tail()
            stop()
            raise ServerStartError(text(f"{what} exited during start (exit code {code}).",
                                        f"{what} 在启动过程中退出了（退出码 {code}）。"),
                                   fix=fix or text(f"Read the log tail below (full log: {proc.log_path}).",
                                                   f"请阅读下面的日志末尾（完整日志：{proc.log_path}）。"),
                                   log_tail=log)
        if ready():
            return
        if time.monotonic() > deadline:
            log = log_tail()
            stop()
            raise ServerStartError(text(f"{what} did not become healthy within {timeout:.0f} s.",
                                        f"{what} 在 {timeout:.0f} 秒内没有进入就绪（healthy）状态。"),
                                   fix=fix or text("Read the log below.", "请阅读下面的日志。"), log_tail=log)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def wait_gone(pid: int, timeout: float = 15) -> bool:
    """True once `pid` has exited (or is a zombie awaiting its parent) — how tests prove nothing is left running."""
    import psutil  # only needed here

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def listener_env(port: int, name: str) -> str | None:
    """An environment variable of the process listening on `port` (e.g. an Ollama's GOMAXPROCS): what it really
    runs with, whoever started it; None when unset or not readable."""
    import psutil
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            try:
                return psutil.Process(conn.pid).environ().get(name)
            except (psutil.Error, OSError):
                return None
    return None


def _descendants(pid: int) -> list:
    import psutil
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@atexit.register
def _stop_all() -> None:
    for proc in list(_live):
        try:
            proc.stop(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


def run_logged(argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None,
               cwd: Path | None = None, timeout: float = 3600, on_line=None, append: bool = False) -> int:
    """Run a build step to completion, teeing its output into a log and feeding each line to `on_line`. The
    step runs in its own process group, killed whole on timeout or when this process is interrupted."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a" if append else "w", encoding="utf-8", errors="replace") as log:
        proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=dict(env) if env is not None else None, cwd=cwd,
                                text=True, errors="replace", preexec_fn=_die_with_parent)
        timer = threading.Timer(timeout, lambda: _signal_group(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if on_line:
                    on_line(line)
            return proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGKILL)
