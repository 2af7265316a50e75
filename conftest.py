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
sys.path.append(str(Path(__file__).resolve().parent / "tools"))

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
def pytest_terminal_summary(terminalreporter, config):
    """Each part's time (tools/suite_time.py) with this machine's CPU; after a whole run also the budget, this
    machine's decode speed, and the figures saved to test-results/suite-time.json. Never fails a run."""
    try:
        from labkit.bench.runner import default_threads
        from labkit.cpu import this_cpu
        from suite_time import SAVED, covers_every_lesson, decode_speed, per_item, save, summary, totals, whole_run

        items = per_item((rep.nodeid, rep.duration) for reports in terminalreporter.stats.values()
                         for rep in reports if getattr(rep, "when", None) and hasattr(rep, "duration"))
        if not items:
            return
        t = totals(items)
        whole = covers_every_lesson(t) and whole_run(
            from_testpaths=config.args_source == pytest.Config.ArgsSource.TESTPATHS,
            keyword=config.option.keyword, markexpr=config.option.markexpr,
            deselected=len(terminalreporter.stats.get("deselected", [])),
            workers=getattr(config.option, "numprocesses", None))
        cpu_name, threads = f"{this_cpu().describe()}, {os.cpu_count()} cores", default_threads()
        speed = decode_speed(threads) if whole else None
        lines = summary(t, whole=whole, cpu=cpu_name, decode_tps=speed, threads=threads)
        if whole:
            save(SAVED, items, cpu=cpu_name, decode_tps=speed, threads=threads)
    except Exception as exc:  # noqa: BLE001 - a report, not a test
        lines = [f"not recorded ({type(exc).__name__}: {exc})"]
    terminalreporter.section("suite time")
    for line in lines:
        terminalreporter.write_line(line)
