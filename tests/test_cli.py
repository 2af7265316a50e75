"""The README's lab command really opens JupyterLab with llama-server healthy, and Ctrl-C leaves nothing behind."""
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
import pytest

import labkit
import labkit.home
from labkit.models import model_path
from labkit.net import free_port, port_open
from labkit.procs import wait_gone
from labkit.servers import port_of
from labkit.servers.install import LLAMA_CPP_VERSION, find_llama_tool, llama_cpp_source
from labkit.servers.ui import ui_built, ui_dir

from lab_helpers import named, start_lab, stop_lab, wait_for_lab_url, wait_for_lesson_00


def test_labkit_lab_serves_lesson_00_and_stops_on_ctrl_c(tmp_path):
    """Also when started with SIGINT ignored (`make lab &` in a script, nohup): Ctrl-C must still stop it."""
    server = labkit.up("llamacpp", export=False, quiet=True)  # the lab reuses it, as it would a running one
    env = {**os.environ, "LANG": "zh_CN.UTF-8", "LC_ALL": "", "LABKIT_LANG": ""}  # a learner with a Chinese locale
    lab, port, log = start_lab(tmp_path, env, sigint_ignored=True)
    try:
        page = wait_for_lesson_00(lab, port, log)
        assert page.status_code == 200 and "JupyterLab" in page.text
        api = f"http://127.0.0.1:{port}/api/contents/zh-CN/00_welcome.ipynb?token=labtest"
        assert httpx.get(api, timeout=30).status_code == 200, "JupyterLab serves the course's notebooks folder"
        deadline = time.monotonic() + 30
        while "lesson 00:" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "/lab/tree/zh-CN/00_welcome.ipynb?token=" in log.read_text(), "the Chinese lesson 00 opens"
        lab_api = f"http://127.0.0.1:{port}/lab/api"
        setting = httpx.get(f"{lab_api}/settings/@jupyterlab/translation-extension:plugin?token=labtest",
                            timeout=30).json()
        assert setting["schema"]["properties"]["locale"]["default"] == "zh_CN", "JupyterLab's interface in Chinese"
        packs = httpx.get(f"{lab_api}/translations/?token=labtest", timeout=30).json()["data"]
        assert "zh_CN" in packs, f"the Chinese language pack is installed: {sorted(packs)}"
        news = httpx.get(f"{lab_api}/settings/@jupyterlab/apputils-extension:notification?token=labtest",
                         timeout=30).json()
        assert news["schema"]["properties"]["fetchNews"]["default"] == "false", "no popup asking about news"
        assert httpx.get(server.base_url + "/health", timeout=10).json() == {"status": "ok"}
    finally:
        stop_lab(lab)  # what Ctrl-C sends
    assert wait_gone(lab.pid)
    assert not port_open("127.0.0.1", port), "JupyterLab is still listening after Ctrl-C"
    assert server.alive(), "a server the lab reused is left to its owner"


def test_the_lab_opens_while_ollama_still_builds_and_ctrl_c_stops_the_build(tmp_path):
    """A home where Ollama is missing: lesson 00 is served while Ollama builds in the background (an empty Go
    build cache keeps it building); `labkit status` shows it; Ctrl-C stops the lab and every process of the
    build with it."""
    server = labkit.up("llamacpp", export=False, quiet=True)
    env = {**os.environ, "LABKIT_HOME": str(tmp_path / "home"), "GOCACHE": str(tmp_path / "gocache"),
           "LLAMA_SERVER_BIN": str(find_llama_tool("llama-server")), "LABKIT_MODEL": str(model_path()),
           "LABKIT_MODEL_ALIAS": server.model}
    env.pop("OLLAMA_BIN", None)
    src = llama_cpp_source()  # the new home shares the unpacked sources (Ollama's build takes headers from them)
    (tmp_path / "home" / "build" / "src").mkdir(parents=True)
    (tmp_path / "home" / "build" / "src" / src.parent.name).symlink_to(src.parent)
    assert ui_built(), "run `labkit setup --only web-ui` first"
    (tmp_path / "home" / "ui").mkdir()  # the web UI is built: the background setup goes straight to Ollama
    (tmp_path / "home" / "ui" / LLAMA_CPP_VERSION).symlink_to(ui_dir())
    env["PATH"] = os.pathsep.join(d for d in env["PATH"].split(os.pathsep)
                                  if not (Path(d) / "ollama").is_file())
    lab, port, log = start_lab(tmp_path, env)
    family: list[psutil.Process] = []
    try:
        assert wait_for_lesson_00(lab, port, log).status_code == 200
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not named(family, "go"):
            family = psutil.Process(lab.pid).children(recursive=True)
            time.sleep(0.2)
        assert named(family, "go"), log.read_text()[-3000:]
        status = subprocess.run([sys.executable, "-m", "labkit.cli", "status"], env=env, capture_output=True,
                                text=True, timeout=60)
        assert "… setup: ollama    installing" in status.stdout, status.stdout
        assert not (tmp_path / "home" / "ollama" / "v0.24.0" / "bin").exists(), "still building, nothing installed"
        assert "installing in the background: ollama" in log.read_text()
    finally:
        family = psutil.Process(lab.pid).children(recursive=True) if lab.poll() is None else family
        stop_lab(lab)
    assert wait_gone(lab.pid)
    left = [p for p in family if not wait_gone(p.pid, timeout=20)]
    assert not left, f"still running after the lab stopped: {[p.cmdline()[:3] for p in left]}"
    progress = json.loads((tmp_path / "home" / "run" / "setup-progress.json").read_text())
    assert progress["steps"]["ollama"]["state"] == "stopped", progress  # interrupted, and says so
    status = subprocess.run([sys.executable, "-m", "labkit.cli", "status"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert "stopped" in status.stdout.split("setup: ollama")[1].splitlines()[0], status.stdout


def test_status_and_doctor_exit_codes():
    labkit.up("llamacpp", export=False, quiet=True)
    status = subprocess.run([sys.executable, "-m", "labkit.cli", "status"], capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0 and f"llama-server on :{port_of('llamacpp')}" in status.stdout
    doctor = subprocess.run([sys.executable, "-m", "labkit.cli", "doctor"], capture_output=True, text=True,
                            timeout=120, env={**__import__("os").environ, "COLUMNS": "200"})
    assert doctor.returncode == 0, doctor.stdout[-3000:]
    assert "llama-server runs on this CPU" in doctor.stdout and "cpu" in doctor.stdout
    assert "llama-bench 1 token" in doctor.stdout, "the row reads the smoke test's stamp"
    bad = subprocess.run([sys.executable, "-m", "labkit.cli", "status", "--bogus"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr


def test_in_a_lab_servers_belong_to_the_lab_and_a_killed_lab_leaves_nothing(tmp_path):
    """Kernel A starts Ollama through the lab, kernel B reuses it, A ends, and B still gets answers. A second lab
    is refused, naming the first. Then the lab is killed with SIGKILL: its Ollama, JupyterLab and kernels go too."""
    labkit.up("llamacpp", export=False, quiet=True)
    env = {**os.environ, "LABKIT_OLLAMA_PORT": str(free_port())}
    lab, port, log = start_lab(tmp_path, env)
    kernel_a = None
    try:
        assert wait_for_lesson_00(lab, port, log).status_code == 200
        info = wait_for_lab_url(lab, port, log)  # the URL the lab prints
        assert info["pid"] == lab.pid and "/lab/tree/00_welcome.ipynb?token=labtest" in info["url"]
        kernel_env = {**env, "LABKIT_LAB": info["socket"]}
        kernel = ("import sys, labkit; s = labkit.up('ollama', quiet=True, export=False); "
                  "print(s.port, s.owned, flush=True); sys.stdin.readline()")
        kernel_a = subprocess.Popen([sys.executable, "-c", kernel], env=kernel_env, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
        port_a, owned_a = kernel_a.stdout.readline().split()
        assert port_a == env["LABKIT_OLLAMA_PORT"] and owned_a == "False", "the lab owns it, not kernel A"
        ollama = next(c.pid for c in psutil.net_connections("tcp") if c.laddr.port == int(port_a)
                      and c.status == psutil.CONN_LISTEN)
        assert ollama in [p.pid for p in psutil.Process(lab.pid).children(recursive=True)]
        second = subprocess.run([sys.executable, "-m", "labkit.cli", "lab", "--no-browser"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and f"A lab is already running (pid {lab.pid})" in second.stderr
        kernel_b = ("import labkit, httpx; s = labkit.up('ollama', quiet=True, export=False); "
                    "import sys; sys.stdin.readline(); "
                    "r = httpx.post(s.base_url + '/api/generate', timeout=60, json={'model': s.model, "
                    "'prompt': '你好', 'stream': False, 'options': {'num_predict': 4, 'seed': 42}}); "
                    "print(s.port, r.status_code, r.json()['eval_count'])")
        b = subprocess.Popen([sys.executable, "-c", kernel_b], env=kernel_env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        kernel_a.kill()  # kernel A shut down (the way Jupyter does when it does not wait)
        kernel_a.wait(10)
        out, _ = b.communicate("go\n", timeout=120)
        port_b, status, tokens = out.split()
        assert port_b == port_a and status == "200" and int(tokens) >= 1, "B's request after A ended still works"
        family = psutil.Process(lab.pid).children(recursive=True)
    finally:
        if kernel_a and kernel_a.poll() is None:
            kernel_a.kill()
        stop_lab(lab, signal.SIGKILL)  # no cleanup code of the lab runs
    left = [p for p in family if not wait_gone(p.pid, timeout=60)]
    assert not left, f"left running by a killed lab: {[p.cmdline()[:3] for p in left]}"
    assert not port_open("127.0.0.1", int(env["LABKIT_OLLAMA_PORT"]))
    from labkit.lab import running_lab
    assert running_lab() is None, "a killed lab's leftover lab.json must not block the next lab (the lock is gone)"


def test_python_m_labkit_and_a_missing_model_file_named_by_doctor(tmp_path):
    help_ = subprocess.run([sys.executable, "-m", "labkit", "--help"], capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "doctor" in help_.stdout
    typo = tmp_path / "no-such-model.gguf"
    doctor = subprocess.run([sys.executable, "-m", "labkit", "doctor"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "LABKIT_MODEL": str(typo), "COLUMNS": "250"})
    assert doctor.returncode == 1 and "no-such-model.gguf" in doctor.stdout, doctor.stdout[-2000:]


def test_activating_the_venv_finds_the_labkit_command():
    """What the README tells a beginner to do in a new shell, run the way a beginner runs it."""
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(["bash", "-c", "source .venv/bin/activate && labkit --help"], cwd=root,
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": os.environ["HOME"]})
    assert out.returncode == 0 and "doctor" in out.stdout, out.stderr


def test_the_lab_socket_moves_to_the_temp_folder_when_the_home_path_is_too_long(tmp_path, monkeypatch):
    from labkit import lab
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "h"))
    assert lab.socket_path().parent == tmp_path / "h" / "run"
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / ("deep" * 30)))
    path = lab.socket_path()
    assert len(str(path)) < 100 and path.name.startswith("labkit-lab-")
    owner = lab.Owner(path)  # binds: the path really works
    owner.stop()
    assert not path.exists()


def test_down_stops_only_what_up_started_and_escalates(tmp_path):
    """`labkit down` signals a pid only when its command line is still the one `labkit up` recorded (a reused pid
    belongs to someone else), leaves the lab's and setup's run files alone, and SIGKILLs what ignores SIGTERM for 5 s."""
    import json as _json
    import subprocess as sp
    import time as _time

    env = {**os.environ, "LABKIT_HOME": str(tmp_path / "home")}
    run = tmp_path / "home" / "run"
    run.mkdir(parents=True)
    stubborn_argv = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                           "print('ready', flush=True); time.sleep(120)"]
    stubborn = sp.Popen(stubborn_argv, stdout=sp.PIPE, start_new_session=True)  # its own group, as `up` starts it
    bystander = sp.Popen(["sleep", "120"], start_new_session=True)
    try:
        assert stubborn.stdout.readline().strip() == b"ready"  # SIGTERM is ignored from here on
        (run / "llamacpp-8080.json").write_text(_json.dumps({"pid": stubborn.pid, "argv": stubborn_argv}))
        (run / "ollama-11434.json").write_text(_json.dumps({"pid": bystander.pid, "argv": ["ollama", "serve"]}))
        (run / "lab.json").write_text(_json.dumps({"pid": bystander.pid, "url": None}))
        t0 = _time.monotonic()
        out = sp.run([sys.executable, "-m", "labkit", "down"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "stopped 1 server(s)" in out.stdout, out.stdout + out.stderr
        assert stubborn.wait(timeout=5) == -signal.SIGKILL and _time.monotonic() - t0 >= 4.5  # after 5 s of SIGTERM
        assert bystander.poll() is None, "a reused pid (another command line) must not be signalled"
        assert (run / "lab.json").is_file() and not (run / "ollama-11434.json").exists()
    finally:
        for p in (stubborn, bystander):
            if p.poll() is None:
                p.kill()
                p.wait()


# A stand-in for a Jupyter server on SIGTERM: it closes its listening socket (cleanup done), then stays alive on a
# non-daemon thread as JupyterLab does while AnyIO's idle worker threads time out (jupyterlab#10442) — or, with
# BUSY, keeps listening for 2 s (still cleaning up) and exits by itself.
FAKE_JUPYTER = """
import signal, socket, sys, threading, time
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen()
busy = sys.argv[1] == "busy"
def on_term(*_):
    if busy:
        time.sleep(2); sys.exit(0)
    sock.close()
    threading.Thread(target=time.sleep, args=(30,)).start()
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("case", ["idle", "busy"])
def test_the_lab_stops_jupyter_without_waiting_for_its_idle_threads(case):
    """Ctrl-C on `make lab` took up to 15 s when JupyterLab had served a page in its last 10 s: its cleanup was done,
    only idle worker threads kept the process alive. The lab kills it once it listens on nothing and has no children
    left for a second, and never earlier: a Jupyter still cleaning up exits on its own."""
    from labkit.lab import stop_jupyter

    fake = subprocess.Popen([sys.executable, "-c", FAKE_JUPYTER, case], stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        stop_jupyter(fake, timeout=15)
        took = time.monotonic() - t0
    finally:
        if fake.poll() is None:
            fake.kill()
            fake.wait()
    if case == "idle":
        assert fake.returncode == -signal.SIGKILL and 0.9 < took < 5, (fake.returncode, took)
    else:
        assert fake.returncode == 0 and 1.9 < took < 10, (fake.returncode, took)
