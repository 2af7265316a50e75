"""tools/suite_time.py, the summary every pytest run prints: on a recorded full run (data/suite/), the parts add up,
the budget applies only to a full run, a notebook over 60 s is named, and a saved run can be read back."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import suite_time  # tools/suite_time.py (conftest puts tools/ on the path)

RECORDED = Path(__file__).resolve().parents[1] / "data" / "suite" / "xeon-amx-2026-12-06.json"


@pytest.fixture
def saved() -> dict:
    return json.loads(RECORDED.read_text())


def test_parts_of_a_recorded_full_run_add_up(saved):
    items = saved["seconds"]
    t = suite_time.totals(items)
    assert (t["tests"]["items"], t["English"]["items"], t["Chinese"]["items"]) == (702, 20, 20)
    assert sum(t[p]["seconds"] for p in suite_time.PARTS) == pytest.approx(sum(items.values()))
    assert t["Chinese"]["seconds"] == pytest.approx(sum(s for k, s in items.items() if k.startswith("notebooks/zh-CN/")))
    assert set(t["notebooks"]) == {k.split("::")[0] for k in items if k.startswith("notebooks/")}
    assert suite_time.is_full_run(t, lessons=20) and not suite_time.is_full_run(t, lessons=21)


def test_the_summary_states_the_budget_for_a_full_run_only(saved):
    t = suite_time.totals(saved["seconds"])
    lines = suite_time.summary(t, cpu=saved["cpu"], decode_tps=saved["decode_tps"], lessons=20)
    first = t["tests"]["seconds"] + t["English"]["seconds"]
    assert lines[0].startswith(f"tests {suite_time.clock(t['tests']['seconds'])} (702) · English ")
    assert f"tests + English {suite_time.clock(first)} of 6:00" in lines[1] and "92 tok/s here" in lines[1]
    assert lines[2].startswith("slowest notebook: 13_measure_and_compare.ipynb")
    without_twins = {k: s for k, s in saved["seconds"].items() if not k.startswith("notebooks/zh-CN/")}
    partial = suite_time.summary(suite_time.totals(without_twins), lessons=20)
    assert not any(line.startswith("budget") for line in partial) and "Chinese" not in partial[0]
    unmeasured = suite_time.summary(t, decode_tps=None, lessons=20)
    assert unmeasured[1].endswith("not measured here")


def test_a_notebook_over_its_minute_is_named(saved):
    items = dict(saved["seconds"])
    slow = next(k for k in items if k.startswith("notebooks/zh-CN/16_"))
    items[slow] = 61.0
    lines = suite_time.summary(suite_time.totals(items), lessons=20)
    assert lines[-1] == "notebooks over 60 s: 16_embeddings_and_rag.ipynb 61 s"


def test_parts_and_clock():
    assert [suite_time.part_of(n) for n in ("tests/test_sse.py::test_x", "notebooks/01_llama_cpp_server.ipynb::01",
                                            "notebooks/zh-CN/01_llama_cpp_server.ipynb::01", "conftest.py::x")] == \
        ["tests", "English", "Chinese", None]
    assert [suite_time.clock(s) for s in (0, 59.4, 59.6, 345.2, 3600)] == ["0:00", "0:59", "1:00", "5:45", "60:00"]
    assert suite_time.per_item([("tests/a.py::t", 1.0), ("tests/a.py::t", 0.5), ("x.py::t", 9)]) == {"tests/a.py::t": 1.5}


def test_a_saved_run_reads_back_and_a_missing_one_is_named(tmp_path, saved, capsys):
    path = tmp_path / "suite-time.json"
    suite_time.save(path, saved["seconds"], cpu=saved["cpu"], decode_tps=None)
    assert suite_time.main([str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tests ") and saved["cpu"] in out
    assert suite_time.main([str(tmp_path / "none.json")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_decode_speed_is_none_without_a_build(monkeypatch):
    import labkit.bench.limits as limits

    def missing(*_, **__):
        raise FileNotFoundError("llama-bench")
    monkeypatch.setattr(limits, "run_llama_bench", missing)
    assert suite_time.decode_speed(2) is None
