"""The benchmark's pure parts: per-request metrics, summaries, tool output parsers, the six ratios, the report.
Unit-tested on runs recorded from the real servers (data/bench/)."""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from ..sse import Assembled
from ..tables import MARK, render, table

# A request is a `labkit.sse.Assembled`: the stream folded, with each text chunk's arrival time (seconds since the
# request left) in `t_deltas`, `t_end`, the token count (`n_tokens`, from usage) and TTFT / decode tok/s.


def itls(rec: Assembled) -> list[float]:
    """Inter-token latencies: the gaps between consecutive text chunks."""
    return [b - a for a, b in zip(rec.t_deltas, rec.t_deltas[1:])]


def tpot(rec: Assembled) -> float | None:
    """Time per output token after the first (vllm's TPOT): (E2E - TTFT) / (tokens - 1)."""
    if rec.n_tokens < 2 or not rec.t_deltas or rec.t_end is None:
        return None
    return (rec.t_end - rec.t_deltas[0]) / (rec.n_tokens - 1)


def server_decode_tps(rec: Assembled) -> float | None:
    """llama-server's own decode speed for the request (`timings.predicted_per_second`); None from Ollama."""
    return (rec.timings or {}).get("predicted_per_second")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation, like numpy's default."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass
class Summary:
    """One (target, concurrency) cell of the benchmark: medians and p95 over its requests."""

    target: str
    concurrency: int
    requests: int
    wall_s: float
    ttft_med: float
    ttft_p95: float
    tpot_med: float
    tpot_p95: float
    itl_med: float
    itl_p95: float
    e2e_med: float
    e2e_p95: float
    decode_tps_med: float          # per request, client-side
    server_decode_tps_med: float   # per request, the server's own timings (nan when it sends none)
    output_tps: float              # all tokens / wall time: aggregate throughput
    request_tps: float


def summarize(target: str, concurrency: int, records: Sequence[Assembled], wall_s: float) -> Summary:
    """Fold a level's records into medians / p95 and aggregate throughput."""
    def clean(xs: Iterable[float | None]) -> list[float]:
        return [x for x in xs if x is not None]
    t1 = clean(r.ttft for r in records)
    tp = clean(tpot(r) for r in records)
    gaps = [g for r in records for g in itls(r)]
    e2e = [r.t_end for r in records]
    dec = clean(r.decode_tps for r in records)
    srv = clean(server_decode_tps(r) for r in records)
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    return Summary(target, concurrency, len(records), wall_s, med(t1), percentile(t1, 95), med(tp),
                   percentile(tp, 95), med(gaps), percentile(gaps, 95), med(e2e), percentile(e2e, 95), med(dec),
                   med(srv), sum(r.n_tokens for r in records) / wall_s, len(records) / wall_s)


SUMMARY_COLUMNS = ("target", "conc", "reqs", "TTFT med", "p95", "TPOT med", "p95 ", "ITL p95", "E2E med",
                   "decode/s", "server/s", "out tok/s", "req/s")


def format_summaries(rows: Sequence[Summary]) -> str:
    """One row per (target, concurrency); latencies in ms, speeds in tokens/s."""
    return render(table(SUMMARY_COLUMNS, ([s.target, s.concurrency, s.requests, f"{s.ttft_med * 1e3:.0f}",
                                           f"{s.ttft_p95 * 1e3:.0f}", f"{s.tpot_med * 1e3:.1f}",
                                           f"{s.tpot_p95 * 1e3:.1f}", f"{s.itl_p95 * 1e3:.1f}",
                                           f"{s.e2e_med * 1e3:.0f}", f"{s.decode_tps_med:.1f}",
                                           f"{s.server_decode_tps_med:.1f}", f"{s.output_tps:.1f}",
                                           f"{s.request_tps:.2f}"] for s in rows), right=SUMMARY_COLUMNS[1:]))



# ---------------------------------------------------------------- what the tools print

def parse_llama_bench(text: str) -> dict[str, dict]:
    """{'pp512': row, 'tg128': row} from `llama-bench -o json` output; each row keeps avg_ts, threads, size."""
    rows = json.loads(text)
    out = {}
    for row in rows:
        name = f"pp{row['n_prompt']}" if row["n_gen"] == 0 else f"tg{row['n_gen']}"
        out[name] = {"test": name, "tokens_per_s": row["avg_ts"], "stddev": row["stddev_ts"],
                     "threads": row["n_threads"], "model_bytes": row["model_size"], "model_type": row["model_type"],
                     "samples": row["samples_ts"]}
    return out


def parse_batched_bench(text: str) -> dict[int, dict]:
    """{parallel sequences: row} from `llama-batched-bench --output-format jsonl`; a row keeps speed_tg (the
    aggregate decode tok/s of all sequences together) and speed_pp."""
    rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return {row["pl"]: {"parallel": row["pl"], "speed_tg": row["speed_tg"], "speed_pp": row["speed_pp"],
                        "threads": row["n_threads"], "n_gen": row["tg"]} for row in rows}


def data_payloads(chunks: Sequence[bytes]) -> list[str]:
    """The JSON texts of an SSE body the quickest way possible (split lines, keep `data: {...}`): the baseline."""
    body = b"".join(chunks).decode()
    return [line[6:] for line in body.splitlines() if line.startswith("data: {")]


def engine_from_log(text: str) -> str:
    """Pure part of `ollama_engine`, tested on a recorded Ollama log. Runner starts without `--model` only
    discover devices; the last one with `--model` serves the model."""
    starts = [line for line in text.splitlines() if "starting runner" in line and "--model" in line]
    if not starts:
        return "unknown (no model runner started in the log)"
    return "ollama (Go engine on ggml)" if "--ollama-engine" in starts[-1] else "llama.cpp runner (compatibility mode)"



# ---------------------------------------------------------------- the six ratios and the report

def fold_measurements(summaries: Sequence[Summary], got: dict[str, list], *, n: int, api_threads: int) -> dict:
    """The numbers the ratios need, from the targets' summaries and the references' results of every round
    (`got`: name → one result per round): medians, except bandwidth, whose best is the hardware's."""
    by = {(x.target, x.concurrency): x for x in summaries}
    one = by[("llama-server", 1)]
    api_one = by.get((f"llama-server t{api_threads}", 1), one)
    m = dict(client_decode_tps=api_one.decode_tps_med, server_decode_tps=api_one.server_decode_tps_med,
             decode_tps_all=one.decode_tps_med, output_tps_1=one.output_tps,
             output_tps_4=by.get(("llama-server", 4), one).output_tps)
    if ("ollama", 1) in by:
        m["ollama_decode_tps"] = by[("ollama", 1)].decode_tps_med
    if (f"ollama t{api_threads}", 1) in by:
        m["ollama_decode_tps_api"] = by[(f"ollama t{api_threads}", 1)].decode_tps_med
    med = statistics.median
    m.update(llama_bench_tg=med(b[f"tg{n}"]["tokens_per_s"] for b in got["llama-bench"]),
             llama_bench_pp=med(b[f"pp{n}"]["tokens_per_s"] for b in got["llama-bench"]),
             model_bytes=got["llama-bench"][0][f"tg{n}"]["model_bytes"], n_gen=n, n_prompt=n,
             engine_batch_ratio=med(b[4]["speed_tg"] / b[1]["speed_tg"] for b in got["llama-batched-bench"]),
             read_bandwidth=max(got["bandwidth"]))
    m["bandwidth_tps"] = m["read_bandwidth"] / m["model_bytes"]
    if "llama-bench api" in got:
        m["llama_bench_tg_api"] = med(b[f"tg{n}"]["tokens_per_s"] for b in got["llama-bench api"])
    if "bandwidth 1" in got:
        m["tg_scaling"] = m["llama_bench_tg"] / m["llama_bench_tg_api"]
        m["bw_scaling"] = m["read_bandwidth"] / max(got["bandwidth 1"])
    return m


@dataclass
class Ratio:
    """A measured ratio, its target, and what it means; `ok` compares in the right direction."""

    name: str
    value: float | None
    target: float
    higher_is_better: bool = True
    note: str = ""

    @property
    def ok(self) -> bool | None:
        if self.value is None or self.value != self.value:  # missing or nan
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target


def regime(m: dict) -> str:
    """What limits decoding, from how tg and read bandwidth grow from 1 thread to all: a verdict only when more
    threads helped at all; slower with more threads means other work shares the cores (lesson 13, traps)."""
    if m["tg_scaling"] < 1.0:
        return "contended: more threads decoded slower (other work on the cores), no verdict"
    return "compute-bound" if m["tg_scaling"] > 1.1 * m["bw_scaling"] else "bandwidth-bound"


def compute_ratios(m: dict) -> list[Ratio]:
    """The six ratios from a dict of measurements (keys below; missing ones give value None with the reason).
    The notes carry the engine-side measurement that explains a ratio when it falls short."""
    def div(a: str, b: str) -> float | None:
        x, y = m.get(a), m.get(b)
        return x / y if x and y else None
    api_tg = "llama_bench_tg_api" if m.get("llama_bench_tg_api") else "llama_bench_tg"
    api_threads = m.get("api_threads", m.get("threads"))
    all_decode = "decode_tps_all" if m.get("decode_tps_all") else "client_decode_tps"
    ollama_note = f"Ollama engine: {m.get('ollama_engine', 'unknown')}, num_thread {m.get('threads')}" \
        if m.get("ollama_decode_tps") else m.get("ollama_missing", "Ollama not measured")
    if m.get("ollama_decode_tps_api") and m.get("client_decode_tps"):
        ollama_note += (f"; at {api_threads} thread(s) {m['ollama_decode_tps_api'] / m['client_decode_tps']:.2f}"
                        " (a core left for its Go code and the client)")
    bw = m.get("read_bandwidth")
    limit = m.get("llama_bench_tg") and m.get("model_bytes") and bw and m["llama_bench_tg"] * m["model_bytes"] / bw
    api_note = f"llama-bench tg{m.get('n_gen', '')} at {api_threads} thread(s), same GGUF"
    if m.get("decode_tps_all") and m.get("llama_bench_tg") and api_threads != m.get("threads"):
        api_note += (f"; at {m['threads']} threads {m['decode_tps_all'] / m['llama_bench_tg']:.2f} "
                     "(client + HTTP thread take cycles from the engine's threads)")
    batch_note = "continuous batching: 4 sequences share each pass over the weights"
    if m.get("engine_batch_ratio"):
        batch_note = f"the engine itself (llama-batched-bench, no HTTP): {m['engine_batch_ratio']:.2f}x"
    bw_note = f"{(bw or 0) / 1e9:.1f} GB/s measured, {(m.get('model_bytes') or 0) / 1e6:.0f} MB read per token"
    if m.get("tg_scaling") and m.get("bw_scaling"):
        bw_note += (f"; 1→{m['threads']} threads: tg x{m['tg_scaling']:.2f}, bandwidth x{m['bw_scaling']:.2f}"
                    f" → {regime(m)}")
    return [
        Ratio("client decode ÷ server timings.predicted_per_second", div("client_decode_tps", "server_decode_tps"),
              0.97, note="same requests; the gap is HTTP + SSE + Python on the shared cores"),
        Ratio("API decode (openai-python stream) ÷ llama-bench tg", div("client_decode_tps", api_tg), 0.95,
              note=api_note),
        Ratio("labkit.sse CPU per chunk ÷ json.loads per chunk", m.get("sse_ratio"), 2.0, higher_is_better=False,
              note=f"{m.get('sse_us', float('nan')):.1f} µs vs {m.get('json_us', float('nan')):.1f} µs per chunk"),
        Ratio("aggregate tok/s at 4 streams ÷ 1 stream (--parallel 4)", div("output_tps_4", "output_tps_1"), 1.5,
              note=batch_note),
        Ratio("Ollama decode ÷ llama-server decode (same GGUF, threads)", div("ollama_decode_tps", all_decode),
              0.90, note=ollama_note),
        Ratio("llama-bench tg × model bytes ÷ read bandwidth", limit or None, 0.45, note=bw_note),
    ]


def format_ratios(ratios: Sequence[Ratio]) -> str:
    """✔/✘ per ratio with its value, its target and the note that explains it — what `labkit bench` prints last."""
    return render(table(["", "ratio", "value", "target", "note"],
                        ([MARK[r.ok], r.name, "n/a" if r.ok is None else f"{r.value:.2f}",
                          f"{'≥' if r.higher_is_better else '≤'} {r.target:.2f}", r.note] for r in ratios),
                        right=["value"]))


@dataclass
class Report:
    """Everything one run measured: per-level summaries, the limits, and the ratios."""

    summaries: list[Summary]
    measurements: dict
    ratios: list[Ratio]

    def __str__(self) -> str:
        m = self.measurements
        limits = (f"engine limit  llama-bench tg{m.get('n_gen')}: {m.get('llama_bench_tg', 0):.1f} tok/s, "
                  f"pp{m.get('n_prompt')}: {m.get('llama_bench_pp', 0):.1f} tok/s ({m.get('threads')} threads)"
                  + (f"; {m['llama_bench_tg_api']:.1f} tok/s at {m['api_threads']}"
                     if m.get("llama_bench_tg_api") and m.get("api_threads") != m.get("threads") else "") + "\n"
                  f"batching      llama-batched-bench 4 sequences ÷ 1: {m.get('engine_batch_ratio', 0):.2f}x\n"
                  f"memory limit  {m.get('read_bandwidth', 0) / 1e9:.1f} GB/s ÷ {m.get('model_bytes', 0) / 1e6:.0f} MB"
                  f" = {m.get('bandwidth_tps', 0):.0f} tok/s at most")
        return "\n\n".join([f"model {m.get('model')}", format_summaries(self.summaries), limits,
                            format_ratios(self.ratios)])

    def to_json(self) -> dict:
        return {"summaries": [asdict(s) for s in self.summaries], "measurements": self.measurements,
                "ratios": [{**asdict(r), "ok": r.ok} for r in self.ratios]}

