"""tools/suite_time.py, the summary every pytest run prints: on a recorded whole run (data/suite/), the parts add up,
the budget applies to a whole run only and says when it is over, a notebook over 60 s is named, a saved run reads
back, and the decode speed is measured on the embedded model without ever downloading it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import suite_time  # tools/suite_time.py (conftest puts tools/ on the path)

DATA = Path(__file__).resolve().parents[1] / "data" / "suite"
RECORDED = DATA / "xeon-amx-2026-12-06.json"


@pytest.fixture
def saved() -> dict:
    return json.loads(RECORDED.read_text())


def test_parts_of_a_recorded_whole_run(saved):
    items = saved["seconds"]
    t = suite_time.totals(items)
    assert (t["tests"]["items"], t["English"]["items"], t["Chinese"]["items"]) == (702, 20, 20)
    assert t["Chinese"]["seconds"] == pytest.approx(sum(s for k, s in items.items() if k.startswith("notebooks/zh-CN/")))
    assert t["tests"]["seconds"] == pytest.approx(sum(s for k, s in items.items() if k.startswith("tests/")))
    assert set(t["notebooks"]) == {k.split("::")[0] for k in items if k.startswith("notebooks/")}
    assert suite_time.covers_every_lesson(t, lessons=20) and not suite_time.covers_every_lesson(t, lessons=21)
    one_test = {k: s for k, s in items.items() if k.startswith("notebooks/")} | {next(iter(items)): 0.1}
    assert suite_time.covers_every_lesson(suite_time.totals(one_test), lessons=20)   # hence whole_run() too


def test_only_make_tests_session_is_a_whole_run():
    assert suite_time.whole_run(from_testpaths=True)
    assert not suite_time.whole_run(from_testpaths=False)                 # pytest tests/test_x.py notebooks/…
    assert not suite_time.whole_run(from_testpaths=True, keyword="sse")   # -k
    assert not suite_time.whole_run(from_testpaths=True, markexpr="slow")
    assert not suite_time.whole_run(from_testpaths=True, deselected=3)
    assert not suite_time.whole_run(from_testpaths=True, workers=2)       # xdist: the items' times add up workers'


def test_the_summary_states_the_budget_for_a_whole_run_only(saved):
    t = suite_time.totals(saved["seconds"])
    lines = suite_time.summary(t, whole=True, cpu=saved["cpu"], decode_tps=saved["decode_tps"], threads=2)
    first = t["tests"]["seconds"] + t["English"]["seconds"]
    assert lines[0].startswith(f"tests {suite_time.clock(t['tests']['seconds'])} (702) · English ")
    assert lines[0].endswith("— on Intel(R) Xeon(R) Processor, 2 cores")
    assert f"tests + English {suite_time.clock(first)} of 6:00 · " in lines[1] and "92 tok/s here at 2 threads" in lines[1]
    assert "over" not in lines[1]
    assert lines[2].startswith("slowest notebook: 13_measure_and_compare.ipynb")
    assert not any(line.startswith("budget") for line in suite_time.summary(t, whole=False))
    assert suite_time.summary(t, whole=True)[1].endswith("not measured here")
    slower = {k: s * 1.1 for k, s in saved["seconds"].items()}
    over = suite_time.summary(suite_time.totals(slower), whole=True)[1]
    assert "6:00 — over · Chinese twins" in over and "3:00 — over — set on" in over


def test_a_notebook_over_its_minute_is_named(saved):
    items = dict(saved["seconds"])
    items[next(k for k in items if k.startswith("notebooks/zh-CN/16_"))] = 61.0
    lines = suite_time.summary(suite_time.totals(items), whole=False)
    assert lines[-1] == "notebooks over 60 s: 16_embeddings_and_rag.ipynb 61 s"


def test_parts_and_clock():
    assert [suite_time.part_of(n) for n in ("tests/test_sse.py::test_x", "notebooks/01_llama_cpp_server.ipynb::01",
                                            "notebooks/zh-CN/01_llama_cpp_server.ipynb::01", "conftest.py::x")] == \
        ["tests", "English", "Chinese", None]
    assert [suite_time.clock(s) for s in (0, 59.4, 59.6, 345.2, 3600)] == ["0:00", "0:59", "1:00", "5:45", "60:00"]
    assert suite_time.per_item([("tests/a.py::t", 1.0), ("tests/a.py::t", 0.5), ("x.py::t", 9)]) == {"tests/a.py::t": 1.5}


def test_a_saved_run_reads_back_and_bad_files_are_named(tmp_path, saved, capsys):
    path = tmp_path / "suite-time.json"
    suite_time.save(path, saved["seconds"], cpu=saved["cpu"], decode_tps=101.4, threads=2)
    assert suite_time.main([str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("tests ") and out[0].endswith(saved["cpu"])
    assert out[1].startswith("budget: ") and out[1].endswith("101 tok/s here at 2 threads")
    assert suite_time.main([str(tmp_path / "none.json")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"seconds": 3}')
    assert suite_time.main([str(tmp_path / "bad.json")]) == 2
    assert "not a suite-time record" in capsys.readouterr().err


def test_decode_speed_runs_llama_bench_on_the_embedded_model_and_never_downloads(monkeypatch, tmp_path):
    import labkit.bench.limits as limits
    import labkit.models as models
    from labkit.bench.metrics import parse_llama_bench

    gguf = tmp_path / "SmolLM2.gguf"
    calls = []

    def recorded(path, **kw):
        calls.append((path, kw))
        return parse_llama_bench((DATA / "llama_bench_tg64_t2.json").read_text())

    def no_download(*_, **__):
        raise AssertionError("the report must not download the model")
    monkeypatch.setattr(models, "fetch_embedded", no_download)
    monkeypatch.setattr(models, "cached_path", lambda: gguf)
    monkeypatch.setattr(limits, "run_llama_bench", recorded)
    monkeypatch.setenv("LABKIT_MODEL", str(tmp_path / "someone-elses.gguf"))   # not what the reference measured

    monkeypatch.setattr(models, "is_verified", lambda path: False)   # no model yet: nothing runs, nothing downloads
    assert suite_time.decode_speed(2) is None and calls == []

    monkeypatch.setattr(models, "is_verified", lambda path: path == gguf)
    assert suite_time.decode_speed(2) == pytest.approx(106.322141)
    assert calls == [(gguf, {"threads": 2, "n_prompt": 0, "n_gen": 64, "repetitions": 1, "timeout": 60})]

    def broken(*_, **__):
        raise RuntimeError("llama-bench failed (exit 132)")
    monkeypatch.setattr(limits, "run_llama_bench", broken)
    assert suite_time.decode_speed(2) is None
