"""labkit.bench's pure parts on data recorded from the real servers (data/bench/)."""
from __future__ import annotations

import base64
import json
import math

import pytest

from labkit import bench
from labkit.sse import Assembled
from labkit.home import data_dir

DATA = data_dir() / "bench"


def as_assembled(r: dict) -> Assembled:
    """A recorded request (arrival times, usage's token count, the server's tok/s) as labkit.sse folds it."""
    return Assembled(text=r["text"], t_deltas=r["t_deltas"], t_end=r["t_end"], n_deltas=len(r["t_deltas"]),
                     usage={"completion_tokens": r["tokens"]}, timings={"predicted_per_second": r["server_decode_tps"]})


@pytest.fixture(scope="module")
def recorded():
    raw = json.loads((DATA / "stream_records.json").read_text())
    return raw, [as_assembled(r) for r in raw["records"]]


def test_per_request_metrics_follow_their_definitions(recorded):
    _, recs = recorded
    r = recs[0]
    assert r.ttft == r.t_deltas[0] > 0
    assert len(bench.itls(r)) == len(r.t_deltas) - 1 and all(g >= 0 for g in bench.itls(r))
    assert bench.tpot(r) == pytest.approx((r.t_end - r.t_deltas[0]) / (r.n_tokens - 1))
    assert r.decode_tps == pytest.approx((r.n_tokens - 1) / (r.t_deltas[-1] - r.t_deltas[0]))


def test_client_decode_matches_the_servers_own_timings(recorded):
    """llama-server reports predicted_per_second; the client's view of the same requests is close to it."""
    _, recs = recorded
    for r in recs:
        assert r.n_tokens == 16 and bench.server_decode_tps(r)
        assert 0.8 < r.decode_tps / bench.server_decode_tps(r) < 1.2


def test_summary_aggregates_tokens_over_wall_time(recorded):
    raw, recs = recorded
    s = bench.summarize("llama-server", raw["concurrency"], recs, raw["wall_s"])
    assert s.requests == 4 and s.output_tps == pytest.approx(64 / raw["wall_s"])
    assert s.ttft_med <= s.ttft_p95 and s.tpot_med <= s.tpot_p95
    table = bench.format_summaries([s])
    assert "TTFT med" in table and "llama-server" in table.splitlines()[2]


def test_percentile_interpolates_like_numpy():
    assert bench.percentile([1, 2, 3, 4], 50) == 2.5
    assert bench.percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)
    assert math.isnan(bench.percentile([], 95))


def test_empty_stream_has_no_ttft_or_decode():
    r = Assembled(t_end=1.0)
    assert r.ttft is None and r.decode_tps is None and bench.tpot(r) is None and bench.server_decode_tps(r) is None


def test_parse_llama_bench_json():
    rows = bench.parse_llama_bench((DATA / "llama_bench_t1.json").read_text())
    assert set(rows) == {"pp16", "tg16"}
    assert rows["tg16"]["threads"] == 1 and rows["tg16"]["model_bytes"] > 90e6 and rows["tg16"]["tokens_per_s"] > 0


def test_sse_cpu_ratio_on_a_recorded_stream():
    chunks = [base64.b64decode(c) for c in json.loads((DATA / "stream_chunks.json").read_text())["chunks_b64"]]
    assert len(bench.data_payloads(chunks)) >= 16  # role chunk, 16 tokens, finish/usage
    out = bench.sse_cpu_ratio(chunks, repeats=5)
    assert out["chunks"] == len(bench.data_payloads(chunks)) and out["ratio"] > 1  # framing costs something


def test_ratios_compare_in_the_right_direction_and_say_what_is_missing():
    m = {"client_decode_tps": 20, "server_decode_tps": 20.2, "llama_bench_tg": 21, "sse_ratio": 2.5,
         "output_tps_1": 20, "output_tps_4": 40, "model_bytes": 96e6, "read_bandwidth": 4e9, "threads": 1}
    ratios = {r.name.split(" ")[0] + r.name.split(" ")[1]: r for r in bench.compute_ratios(m)}
    oks = [r.ok for r in bench.compute_ratios(m)]
    assert oks == [True, True, False, True, None, True]
    text = bench.format_ratios(bench.compute_ratios(m))
    rows = [line for line in text.splitlines() if line[:1] in "✔✘·"]
    assert len(rows) == 6 and "target" in text.splitlines()[0] and "Ollama not measured" in text and "≤ 2.00" in text
    assert ratios


def test_default_threads_are_all_cores_and_the_api_server_leaves_one_for_the_client():
    import os
    assert bench.default_threads() == os.cpu_count()
    assert bench.Settings(threads=2).api_threads == 1 and bench.Settings(threads=1).api_threads == 1


def test_parse_batched_bench_jsonl():
    rows = bench.parse_batched_bench((DATA / "batched_bench_t2.jsonl").read_text())
    assert set(rows) == {1, 4} and rows[4]["threads"] == 2 and rows[4]["n_gen"] == 64
    assert rows[1]["speed_tg"] > 0 and rows[4]["speed_tg"] > 0


def test_ollama_engine_is_read_from_the_runner_that_got_the_model():
    compat = (DATA / "ollama_runner_starts.log").read_text()
    assert "--ollama-engine" in compat  # the device-discovery runner: no --model, not the one serving
    assert bench.engine_from_log(compat) == "llama.cpp runner (compatibility mode)"
    assert bench.engine_from_log((DATA / "ollama_runner_starts_new_engine.log").read_text()).startswith("ollama (Go")
    assert bench.engine_from_log("").startswith("unknown")


def test_interleave_runs_references_once_per_round_in_alternating_order():
    calls: list[str] = []
    refs = {"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2}
    got: dict[str, list] = {}
    assert bench.interleave([], levels=(1,), rounds=3, references=refs, reference_results=got, progress=False) == []
    assert calls == ["a", "b", "b", "a", "a", "b"] and got == {"a": [1, 1, 1], "b": [2, 2, 2]}


@pytest.mark.parametrize("quant", ["q4_1", "q4_0"])
def test_recorded_full_reports_rejudge_to_what_they_printed(quant):
    """`labkit bench --json` runs recorded on the course machine: the ratios recomputed from the measurements
    are the ones the run printed, and the notes carry the engine-side explanation."""
    raw = json.loads((DATA / f"report_{quant}.json").read_text())
    again = bench.compute_ratios(raw["measurements"])
    assert [r.value for r in again] == pytest.approx([r["value"] for r in raw["ratios"]])
    assert [r.ok for r in again] == [r["ok"] for r in raw["ratios"]]
    notes = " ".join(r.note for r in again)
    assert "llama-batched-bench" in notes and "1→2 threads" in notes and "at 2 threads" in notes
    assert raw["measurements"]["threads"] == 2 and raw["measurements"]["n_gen"] == 128


def test_ratio_notes_explain_a_shortfall():
    m = {"threads": 2, "api_threads": 1, "client_decode_tps": 80, "server_decode_tps": 80, "llama_bench_tg": 130,
         "llama_bench_tg_api": 82, "decode_tps_all": 112, "output_tps_1": 110, "output_tps_4": 150,
         "engine_batch_ratio": 1.4, "ollama_decode_tps": 80, "ollama_decode_tps_api": 76,
         "ollama_engine": "llama.cpp runner (compatibility mode)", "model_bytes": 97e6, "read_bandwidth": 33e9,
         "tg_scaling": 1.6, "bw_scaling": 1.1}
    r = {x.name.split(" ")[0]: x for x in bench.compute_ratios(m)}
    assert r["API"].value == pytest.approx(80 / 82) and "at 2 threads 0.86" in r["API"].note
    assert r["Ollama"].value == pytest.approx(80 / 112) and "at 1 thread(s) 0.95" in r["Ollama"].note
    assert "1.40x" in r["aggregate"].note and "compute-bound" in r["llama-bench"].note


def test_requantized_model_is_a_smaller_gguf_and_cached():
    """`labkit bench --quant Q4_0`: llama-quantize converts the lab's model once; the next call reuses it."""
    from labkit.models import check_gguf, model_path
    out = bench.requantized("Q4_0")
    assert check_gguf(out) == out and out.stat().st_size < model_path().stat().st_size
    mtime = out.stat().st_mtime_ns
    assert bench.requantized("Q4_0") == out and out.stat().st_mtime_ns == mtime
    assert not list(out.parent.glob("*.partial"))


def test_requantize_to_an_unknown_format_is_a_clear_error():
    from labkit.errors import LabkitError
    with pytest.raises(LabkitError, match="llama-quantize to NOPE9 failed"):
        bench.requantized("NOPE9")


def test_regime_gives_a_verdict_only_when_more_threads_helped():
    from labkit.bench import regime
    assert regime({"tg_scaling": 1.8, "bw_scaling": 1.2}) == "compute-bound"     # decode grew faster than reads
    assert regime({"tg_scaling": 1.25, "bw_scaling": 1.3}) == "bandwidth-bound"  # decode grew as reads did
    assert regime({"tg_scaling": 0.7, "bw_scaling": 1.3}).startswith("contended")  # a busy machine: no verdict


def test_fold_measurements_takes_the_recorded_runs_summaries_and_references():
    """A recorded report's summaries plus reference results recorded from llama-bench, llama-batched-bench: the
    summary-derived numbers are the report's own, medians over rounds, the best bandwidth."""
    report = json.loads((DATA / "report_q4_1.json").read_text())
    summaries = [bench.Summary(**s) for s in report["summaries"]]
    lb = bench.parse_llama_bench((DATA / "llama_bench_t1.json").read_text())
    batched = bench.parse_batched_bench((DATA / "batched_bench_t2.jsonl").read_text())
    got = {"llama-bench": [lb, lb], "llama-batched-bench": [batched], "bandwidth": [1e9, 3e9],
           "llama-bench api": [lb], "bandwidth 1": [2e9]}
    m = bench.fold_measurements(summaries, got, n=16, api_threads=1)
    for key in ("client_decode_tps", "server_decode_tps", "decode_tps_all", "output_tps_1", "output_tps_4",
                "ollama_decode_tps", "ollama_decode_tps_api"):
        assert m[key] == pytest.approx(report["measurements"][key]), key
    assert m["llama_bench_tg"] == lb["tg16"]["tokens_per_s"] and m["read_bandwidth"] == 3e9
    assert m["engine_batch_ratio"] == pytest.approx(batched[4]["speed_tg"] / batched[1]["speed_tg"])
    assert m["tg_scaling"] == pytest.approx(1.0) and m["bw_scaling"] == pytest.approx(1.5)
    assert len(bench.compute_ratios({"threads": 2, "api_threads": 1, **m})) == 6
