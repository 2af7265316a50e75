"""The README's lab command really opens JupyterLab with llama-server healthy, and Ctrl-C leaves nothing behind."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx

import labkit
from labkit.net import free_port, port_open
from labkit.procs import wait_gone


def test_labkit_lab_serves_lesson_00_and_stops_on_ctrl_c(tmp_path):
    server = labkit.up("llamacpp", export=False, quiet=True)  # the lab reuses it, as it would a running one
    port = free_port()
    log = (tmp_path / "lab.log").open("wb")
    lab = subprocess.Popen([sys.executable, "-m", "labkit.cli", "lab", "--no-browser", f"--port={port}",
                            "--ServerApp.token=labtest"], stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
            assert lab.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
            time.sleep(0.5)
        page = httpx.get(f"http://127.0.0.1:{port}/lab/tree/00_welcome.ipynb?token=labtest", timeout=30)
        assert page.status_code == 200 and "JupyterLab" in page.text
        contents = httpx.get(f"http://127.0.0.1:{port}/api/contents/00_welcome.ipynb?token=labtest", timeout=30)
        assert contents.status_code == 200, "JupyterLab serves the course's notebooks folder"
        assert httpx.get(server.base_url + "/health", timeout=10).json() == {"status": "ok"}
    finally:
        lab.send_signal(signal.SIGINT)  # what Ctrl-C sends
        lab.wait(30)
        log.close()
    assert wait_gone(lab.pid)
    assert not port_open("127.0.0.1", port), "JupyterLab is still listening after Ctrl-C"
    assert server.alive(), "a server the lab reused is left to its owner"


def test_status_and_doctor_exit_codes():
    labkit.up("llamacpp", export=False, quiet=True)
    status = subprocess.run([sys.executable, "-m", "labkit.cli", "status"], capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0 and "llama-server on :8080" in status.stdout
    doctor = subprocess.run([sys.executable, "-m", "labkit.cli", "doctor"], capture_output=True, text=True,
                            timeout=120, env={**__import__("os").environ, "COLUMNS": "200"})
    assert doctor.returncode == 0, doctor.stdout[-3000:]
    bad = subprocess.run([sys.executable, "-m", "labkit.cli", "status", "--bogus"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr
