"""One llama-server and one Ollama for the whole test session (tests and notebooks reuse them), stopped at the end.

Notebook kernels run as children of pytest; `labkit.up()` inside them finds these healthy servers on the
default ports and reuses them instead of starting their own. Set LABKIT_TEST_SERVERS=none to skip this."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import labkit

# The developers' scripts in tools/ (zh_twins, suite_time) import by name in tests and here.
sys.path.insert(0, str(Path(__file__).resolve().parent / "tools"))

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


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter):
    """Each part's time against the budget (tools/suite_time.py), with this machine's CPU and, after a full run,
    its decode speed: the figures a CI log needs to say whether the suite stays within its budget. Saved to
    test-results/suite-time.json too."""
    from labkit.cpu import this_cpu
    from suite_time import decode_speed, is_full_run, per_item, save, summary, totals

    items = per_item((rep.nodeid, rep.duration) for reports in terminalreporter.stats.values() for rep in reports
                     if getattr(rep, "when", None) and hasattr(rep, "duration"))
    if not items:
        return
    t = totals(items)
    cpu = this_cpu()
    cpu_name = f"{cpu.model or cpu.arch}, {os.cpu_count()} cores"
    speed = decode_speed(os.cpu_count() or 1) if is_full_run(t) else None
    save(Path(__file__).resolve().parent / "test-results" / "suite-time.json", items, cpu=cpu_name, decode_tps=speed)
    terminalreporter.section("suite time")
    for line in summary(t, cpu=cpu_name, decode_tps=speed):
        terminalreporter.write_line(line)
