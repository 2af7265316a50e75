"""labkit.bench's pure parts on data recorded from the real servers (data/bench/)."""
from __future__ import annotations

import base64
import json
import math

import pytest

from labkit import bench
from labkit.home import data_dir

DATA = data_dir() / "bench"


@pytest.fixture(scope="module")
def recorded():
    raw = json.loads((DATA / "stream_records.json").read_text())
    return raw, [bench.StreamRecord(**r) for r in raw["records"]]


def test_per_request_metrics_follow_their_definitions(recorded):
    _, recs = recorded
    r = recs[0]
    assert bench.ttft(r) == r.t_deltas[0] > 0
    assert len(bench.itls(r)) == len(r.t_deltas) - 1 and all(g >= 0 for g in bench.itls(r))
    assert bench.tpot(r) == pytest.approx((r.t_end - r.t_deltas[0]) / (r.n_tokens - 1))
    assert bench.decode_tps(r) == pytest.approx((r.n_tokens - 1) / (r.t_deltas[-1] - r.t_deltas[0]))


def test_client_decode_matches_the_servers_own_timings(recorded):
    """llama-server reports predicted_per_second; the client's view of the same requests is close to it."""
    _, recs = recorded
    for r in recs:
        assert r.n_tokens == 16 and r.server_decode_tps
        assert 0.8 < bench.decode_tps(r) / r.server_decode_tps < 1.2


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
    r = bench.StreamRecord(t_deltas=[], t_end=1.0)
    assert bench.ttft(r) is None and bench.decode_tps(r) is None and bench.tpot(r) is None


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
    assert text.count("target") == 6 and "Ollama not measured" in text and "≤ 2.00" in text
    assert ratios


def test_default_threads_leave_a_core_for_the_client():
    assert 1 <= bench.default_threads() <= max(1, __import__("os").cpu_count() - 1)
