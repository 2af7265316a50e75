"""One llama-server and one Ollama for the whole test session (tests and notebooks reuse them), stopped at the end.

Notebook kernels run as children of pytest; `labkit.up()` inside them finds these healthy servers on the
default ports and reuses them instead of starting their own. Set LABKIT_TEST_SERVERS=none to skip this."""
from __future__ import annotations

import os

import labkit

# Tests assert labkit's English messages; the Chinese ones are tested with an explicit environment. (On a machine
# with a Chinese locale, labkit would otherwise answer the tests in Chinese.)
os.environ["LABKIT_LANG"] = "en"


def pytest_sessionstart(session):
    wanted = os.environ.get("LABKIT_TEST_SERVERS", "llamacpp,ollama")
    for kind in filter(None, (k.strip() for k in wanted.split(","))):
        if kind != "none":
            labkit.up(kind, export=False, quiet=True)


def pytest_sessionfinish(session, exitstatus):
    labkit.down()
