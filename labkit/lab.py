"""The running lab: JupyterLab plus the servers it owns.

Outside a lab, a server belongs to the process that started it (a script, a test, a kernel). Inside one, a kernel
that calls `labkit.up("ollama")` asks the lab for it over a Unix socket (its path is in LABKIT_LAB): the lab starts
it, or hands over the one it runs, so the server outlives the notebook that first needed it and stops when the lab
stops. The lab starts servers on its main thread, so even a lab killed with SIGKILL takes them with it."""
from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .errors import LabkitError
from .home import repo_root, subdir
from .labclient import ENV, server_record
from .language import edition, jupyter_settings, lesson_00
from .procs import ManagedProcess, _die_with_parent
from .room import room_server
from .setup import FIRST, setup
from .servers import Server, kind_of, start, start_llama_server



def lab_file() -> Path:
    return subdir("run") / "lab.json"


def lab_lock():
    """Held by the running lab for its whole life (the kernel drops it when the lab dies, even by SIGKILL), so
    "is a lab running?" never depends on a pid that may have been reused. Returns the open file, or None when
    another lab holds it."""
    f = (subdir("run") / "lab.lock").open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def running_lab() -> dict | None:
    """The lab already running from this labkit home (pid, url, socket), or None."""
    probe = lab_lock()
    if probe:  # nobody holds it: no lab, whatever a stale lab.json says
        probe.close()
        return None
    try:
        return json.loads(lab_file().read_text())
    except (OSError, ValueError):
        return {"pid": "?", "url": None}


def socket_path() -> Path:
    """In the labkit home; in the temp folder when that path is too long for a Unix socket (108 bytes)."""
    path = subdir("run") / f"lab-{os.getpid()}.sock"
    return path if len(str(path)) < 100 else Path(tempfile.gettempdir()) / f"labkit-lab-{os.getpid()}.sock"


class Owner:
    """The lab's side: a socket that kernels ask for servers, and the servers it started for them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o600)  # only this user's kernels may ask the lab to start servers
        self.sock.listen(8)
        self.servers: dict[tuple, Server] = {}

    def adopt(self, server: Server) -> None:
        self.servers[server.kind] = server

    def serve(self, timeout: float) -> None:
        """Answer the requests that arrive within `timeout` seconds, one at a time, on this (the main) thread."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return
        conn, _ = self.sock.accept()
        with conn:
            try:
                request = json.loads(conn.makefile("r").readline())
                answer = {"ok": True, "server": server_record(self.server_for(request["kind"]))}
            except Exception as exc:  # noqa: BLE001 - the kernel gets the error, the lab goes on
                answer = {"ok": False, "error": str(exc), "type": type(exc).__name__}
            try:
                conn.sendall((json.dumps(answer) + "\n").encode())
            except OSError:
                pass  # the kernel went away while we started its server; the server stays for the next one

    def server_for(self, kind: str) -> Server:
        """The lab's server of `kind` (the standard one, no options): running, or started now."""
        kind_of(kind)  # an unknown kind fails here, before anything starts
        server = self.servers.get(kind)
        if server is None or not server.alive():
            if server is not None:
                server.stop()
            server = start(kind)
            self.servers[kind] = server
        return server

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.sock.close()
        self.path.unlink(missing_ok=True)


def jupyter_url(pid: int, lesson: str, timeout: float = 60) -> str | None:
    """The URL of `lesson` on the JupyterLab with this pid, from the server file Jupyter writes at start."""
    from jupyter_core.paths import jupyter_runtime_dir
    info_file = Path(jupyter_runtime_dir()) / f"jpserver-{pid}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = json.loads(info_file.read_text())
            return f"{info['url'].rstrip('/')}/lab/tree/{lesson}?token={info['token']}"
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
    return None


def jupyter_command(jupyter_args: list[str], env: dict | None = None) -> tuple[list[str], str]:
    """The `jupyter lab` command line and the lesson it opens: lesson 00 of the learner's edition (LABKIT_LANG or
    the locale), with JupyterLab's interface in that language and its news popup off (labkit's settings folder)."""
    try:
        which = edition(env)
    except ValueError as bad:  # a misspelt LABKIT_LANG: said before anything starts
        raise LabkitError(str(bad)) from None
    settings = subdir("jupyterlab", which)
    (settings / "overrides.json").write_text(json.dumps(jupyter_settings(which), indent=1))
    lesson = lesson_00(which)
    argv = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={repo_root() / 'notebooks'}",
            f"--ServerApp.default_url=/lab/tree/{lesson}", "--ServerApp.ip=127.0.0.1",
            f"--LabApp.app_settings_dir={settings}", *jupyter_args]
    if os.geteuid() == 0:
        argv.append("--allow-root")  # containers and CI machines run as root; Jupyter refuses it otherwise
    return argv, lesson


def start_background_setup() -> ManagedProcess | None:
    """The rest of the lab's setup (Ollama, Go modules, newman, nginx) in the background, tied to the lab: one
    log, progress in `labkit status`; a failure there never stops the lab (the lesson that needs it says so)."""
    from .setup import FIRST, missing
    todo = missing("lab", skip=FIRST)
    if not todo:
        return None
    log = subdir("logs") / "background-setup.log"
    names = ", ".join(s.name for s in todo)
    print(f"… installing in the background: {names} (log: {log}; `labkit status` shows progress)", flush=True)
    return ManagedProcess([sys.executable, "-m", "labkit.cli", "setup", "--group", "lab", *sum(
        (["--only", s.name] for s in todo), [])], log_path=log, cwd=repo_root())


def only_idle_threads_left(pid: int) -> bool:
    """Whether a stopping Jupyter server has done its cleanup: no socket listening and no child (kernel, terminal)
    left. Jupyter then only waits for idle AnyIO worker threads to time out (up to 10 s, jupyterlab#10442)."""
    import psutil
    try:
        proc = psutil.Process(pid)
        listening = [c for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        return not listening and not proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False  # cannot tell: wait for it to exit


def stop_jupyter(jupyter: subprocess.Popen, timeout: float = 15, settle: float = 1.0) -> None:
    """SIGTERM, then wait until JupyterLab exits; once only idle threads keep it alive for `settle` seconds, or after
    `timeout`, SIGKILL (its kernels are gone by then, or stop by themselves when their parent does)."""
    jupyter.send_signal(signal.SIGTERM)
    deadline, idle_since = time.monotonic() + timeout, None
    while jupyter.poll() is None and time.monotonic() < deadline:
        if only_idle_threads_left(jupyter.pid):
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= settle:
                break
        else:
            idle_since = None
        time.sleep(0.2)
    if jupyter.poll() is None:
        jupyter.kill()
    jupyter.wait()


def run(jupyter_args: list[str]) -> int:
    """`make lab`: what lessons 00–01 need, llama-server, then JupyterLab on lesson 00 while the rest installs
    behind it. Ctrl-C (or the end of JupyterLab) stops the servers the lab owns and the background setup.
    With LABKIT_SERVER (a workshop room), JupyterLab alone: the lessons' servers are the room's."""
    lock = lab_lock()
    if lock is None:
        other = running_lab() or {"pid": "?"}
        raise LabkitError(f"A lab is already running (pid {other['pid']}): "
                          f"{other.get('url') or 'still starting; its URL will be in its terminal'}",
                          fix=f"Open that one, or stop it first (Ctrl-C in its terminal, or `kill {other['pid']}`).")
    lab_file().write_text(json.dumps({"pid": os.getpid(), "url": None}))
    room = os.environ.get("LABKIT_SERVER")  # a workshop room's server: nothing to build or start here
    if not room:
        setup("lab", only=FIRST)
    owner = Owner(socket_path())
    background = jupyter = None
    try:
        if room:
            server = room_server("llamacpp", room, os.environ.get("LABKIT_KEY", ""))
        else:
            server = start_llama_server()
            owner.adopt(server)
            background = start_background_setup()
        env = {**os.environ, **server.env(), ENV: str(owner.path)}
        argv, lesson = jupyter_command(jupyter_args)
        jupyter = subprocess.Popen(argv, env=env, cwd=repo_root(), preexec_fn=_die_with_parent)
        url = jupyter_url(jupyter.pid, lesson)
        lab_file().write_text(json.dumps({"pid": os.getpid(), "url": url, "socket": str(owner.path)}))
        print(f"✔ {server}\n✔ lesson 00: {url}\n  Stop the lab with Ctrl-C: its servers and background "
              "setup stop with it.", flush=True)
        while jupyter.poll() is None:
            owner.serve(timeout=0.5)
        return jupyter.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        if jupyter and jupyter.poll() is None:
            stop_jupyter(jupyter)
        if background:
            background.stop()
        owner.stop()
        lab_file().unlink(missing_ok=True)
        lock.close()
