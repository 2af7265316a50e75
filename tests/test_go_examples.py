"""The Go examples (the seed's go-openai and LangChain-Go programs, corrected): `go vet` clean, and `go test`
passing against both real servers. The Go tests read OPENAI_BASE_URL / OPENAI_API_KEY / LABKIT_MODEL_NAME,
which we point at the session's llama-server and Ollama, plus a llama-server with --api-key for the 401 test."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import labkit
from labkit.servers.install import find_ollama

GO_ROOT = Path(__file__).resolve().parents[1] / "examples" / "go"
MODULES = ["go-openai", "langchaingo", "openai-go"]
KEYED_PORT = 8122  # a llama-server with --api-key, only for this module
KEYED_KEY = "sk-lab-go-secret"


@pytest.fixture(scope="module")
def go() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").is_file() else None)
    if not found:
        pytest.fail("Go is not installed; the Go examples need it. Install Go ≥ 1.24 (https://go.dev/dl), "
                    "then `labkit setup` downloads the example modules.")
    return found


def run_go(go: str, module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 280):
    """Run one go command in an example module; on failure the assertion shows its whole output."""
    proc = subprocess.run([go, *args], cwd=GO_ROOT / module, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "GOFLAGS": "-mod=readonly", **(env or {})})
    assert proc.returncode == 0, f"`go {' '.join(args)}` in examples/go/{module} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def keyed_llama():
    """A llama-server that checks keys: the seed's DefaultAnthropicConfig gets 401 from it."""
    server = labkit.up("llamacpp", port=KEYED_PORT, model="smollm2-keyed", api_key=KEYED_KEY, parallel=1,
                       export=False, quiet=True)
    yield server
    server.stop()  # ours alone (port 8122); the session's servers stay up


def server_for(kind: str) -> labkit.Server:
    if kind == "ollama" and not find_ollama():
        pytest.skip("the Ollama binary is not built yet (`labkit setup` builds it)")
    return labkit.up(kind, export=False, quiet=True)


@pytest.mark.parametrize("module", MODULES)
def test_go_vet(go, module):
    run_go(go, module, "vet", "./...")


# Tests that never talk to the server OPENAI_BASE_URL names (a recorder, an unreachable port, flags, the keyed
# llama-server): they run in the llama-server run only. Against Ollama they would repeat the same thing — and
# openai-go's retry backoffs (~3 s) with it.
SERVER_INDEPENDENT = ("TestWireFormat", "TestRetries", "TestUnreachableServerIsAnError", "TestBadFlagsAreErrors",
                      "TestSeedConfigHeaders", "TestKeyedServer401", "TestSeedConfigAgainstKeyedServer")


def defined(module: str) -> set[str]:
    """The test functions a module's *_test.go files define."""
    return {name for path in (GO_ROOT / module).glob("*_test.go")
            for name in re.findall(r"^func (Test\w+)\(", path.read_text(), re.M)}


def test_every_server_independent_test_exists():
    assert set(SERVER_INDEPENDENT) <= set().union(*(defined(m) for m in MODULES))


@pytest.mark.parametrize("kind", ["llamacpp", "ollama"])
@pytest.mark.parametrize("module", MODULES)
def test_go_test_against_server(go, module, kind, keyed_llama):
    server = server_for(kind)
    env = server.env()
    args = ["test", "-count=1", "-v", "./..."]
    if kind == "llamacpp":  # go-openai and openai-go have a 401 test against a keyed llama-server
        env |= {"LABKIT_KEYED_BASE_URL": keyed_llama.openai_base_url, "LABKIT_KEYED_API_KEY": keyed_llama.key}
    else:
        args[1:1] = ["-skip", "^(" + "|".join(SERVER_INDEPENDENT) + ")$"]
    proc = run_go(go, module, *args, env=env)
    independent = set(re.findall(r"^--- PASS: (Test\w+)", proc.stdout, re.M)) & set(SERVER_INDEPENDENT)
    assert independent == (defined(module) & set(SERVER_INDEPENDENT) if kind == "llamacpp" else set()), independent
    skipped = [line for line in proc.stdout.splitlines() if line.lstrip().startswith("--- SKIP")]
    assert not skipped, f"Go tests skipped against {server}:\n" + "\n".join(skipped)
    assert "--- PASS: TestChat" in proc.stdout or "--- PASS: TestGenerateContent" in proc.stdout
