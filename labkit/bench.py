"""Measure a local server the way the field does (vllm bench serve, llama-bench, llama.cpp's server bench).

    from labkit import bench
    target = bench.Target.from_server(labkit.up("llamacpp"))
    runs = bench.interleave([target, other], levels=(1, 4), requests=8, max_tokens=64)
    print(bench.format_summaries(runs))

Per streamed request the client records when each chunk that carried text arrived (`labkit.sse.Assembled`,
the fold every consumer uses); everything else is computed from those times (pure functions, unit-tested on
recorded runs in data/bench/):

- TTFT   time to the first chunk that carried text (`Assembled.ttft`);
- ITL    gaps between those chunks; TPOT = (E2E - TTFT) / (tokens - 1), as vllm defines it;
- decode tokens/s of one request = (tokens - 1) / (last chunk - first chunk) (`Assembled.decode_tps`);
- output tok/s of a level = all tokens / wall time; request throughput = requests / wall time.

The reference limits come from llama-bench (`tg`/`pp` on the same GGUF and threads: the engine without HTTP),
llama-batched-bench (the engine decoding 1 and 4 sequences in one batch: the most batching can gain) and a
memory read-bandwidth measurement: decoding reads every weight once per token, so tokens/s x model bytes can
never exceed the bytes/s the memory delivers. `run()` measures them *between* the servers, round by round, as
it does A/B targets: on a shared machine two numbers taken a minute apart differ by the machine's drift.

`run()` is what `labkit bench` prints: per-level tables, the limits, and six ratios with their targets, each
with a note that carries the measurement explaining it when it falls short.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .errors import LabkitError
from .sse import Assembled

PROMPT = "Write a long story about a robot who learns to paint. Use many sentences."
BENCH_PORT = 8160  # the benchmark's own llama-server (fixed --threads, --parallel 4)


# ---------------------------------------------------------------- one streamed request, as the client saw it
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


def format_summaries(rows: Sequence[Summary]) -> str:
    """A fixed-width table (ms for latencies) that reads well in a terminal and a notebook."""
    head = (f"{'target':<22}{'conc':>5}{'reqs':>5}{'TTFT med':>10}{'p95':>8}{'TPOT med':>10}{'p95':>8}"
            f"{'ITL p95':>9}{'E2E med':>9}{'decode/s':>10}{'server/s':>10}{'out tok/s':>10}{'req/s':>7}")
    lines = [head, "-" * len(head)]
    for s in rows:
        lines.append(f"{s.target:<22}{s.concurrency:>5}{s.requests:>5}{s.ttft_med * 1e3:>10.0f}"
                     f"{s.ttft_p95 * 1e3:>8.0f}{s.tpot_med * 1e3:>10.1f}{s.tpot_p95 * 1e3:>8.1f}"
                     f"{s.itl_p95 * 1e3:>9.1f}{s.e2e_med * 1e3:>9.0f}{s.decode_tps_med:>10.1f}"
                     f"{s.server_decode_tps_med:>10.1f}{s.output_tps:>10.1f}{s.request_tps:>7.2f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- talking to a server

@dataclass
class Target:
    """A server to measure: where it is, the model name, and extra request fields it understands."""

    name: str
    base_url: str  # the server root (…:8080), not /v1
    model: str
    api_key: str = "sk-local-placeholder"
    extra_body: dict = field(default_factory=dict)

    @classmethod
    def from_server(cls, server, name: str | None = None) -> "Target":
        """From a labkit Server; llama-server gets ignore_eos so every request decodes exactly max_tokens."""
        extra = {"ignore_eos": True} if server.kind == "llamacpp" else {}
        return cls(name or f"{server.kind}:{server.port}", server.base_url, server.model, server.key, extra)


def stream_once(client, target: Target, *, max_tokens: int, prompt: str = PROMPT, seed: int = 42) -> Assembled:
    """One streamed chat request through openai-python, every chunk folded by `labkit.sse.Assembled` with its
    arrival time (seconds since the request left)."""
    t0 = time.perf_counter()
    stream = client.chat.completions.create(
        model=target.model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
        temperature=0, seed=seed, stream=True, stream_options={"include_usage": True},
        extra_body=target.extra_body or None)
    rec = Assembled()
    for chunk in stream:
        rec.add(chunk, time.perf_counter() - t0)
    rec.t_end = time.perf_counter() - t0
    return rec


def client_for(target: Target, *, concurrency: int = 4, timeout: float = 120.0):
    """An openai.OpenAI client with enough pooled connections for `concurrency` parallel streams."""
    import httpx
    from openai import OpenAI
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    return OpenAI(base_url=target.base_url + "/v1", api_key=target.api_key, max_retries=0, timeout=timeout,
                  http_client=httpx.Client(limits=limits, timeout=timeout))


def run_level(target: Target, concurrency: int, requests: int, *, max_tokens: int, client=None,
              prompt: str = PROMPT) -> tuple[list[Assembled], float]:
    """`requests` streamed requests, `concurrency` in flight at once; returns the records and the wall time."""
    client = client or client_for(target, concurrency=concurrency)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(stream_once, client, target, max_tokens=max_tokens, prompt=prompt, seed=42 + i)
                   for i in range(requests)]
        records = [f.result() for f in futures]
    return records, time.perf_counter() - t0


def interleave(targets: Sequence[Target], *, levels: Sequence[int] = (1, 4), requests: int = 8,
               max_tokens: int = 64, rounds: int = 2, warmup: int = 1, progress: bool = True,
               levels_for: dict[str, Sequence[int]] | None = None,
               references: dict[str, Callable[[], object]] | None = None,
               reference_results: dict[str, list] | None = None) -> list[Summary]:
    """A/B(/C…) measured in one run: each round visits every (level, target) in alternating order, so machine
    noise (other users, thermal, the page cache) lands on all targets alike instead of on whichever ran last.
    `levels_for` limits a target (by name) to some levels, e.g. a reference measured at concurrency 1 only.
    `references` (name → callable, e.g. a llama-bench run) run once per round between the targets, for the same
    reason: a ratio of two numbers measured minutes apart on a shared machine measures the drift. Their results
    are appended to `reference_results[name]`."""
    from tqdm.auto import tqdm
    levels_for, references = levels_for or {}, references or {}
    out = reference_results if reference_results is not None else {}
    clients = {t.name: client_for(t, concurrency=max(levels)) for t in targets}
    for t in targets:  # warm-up: load the model, fill caches, open connections; not counted
        for _ in range(warmup):
            stream_once(clients[t.name], t, max_tokens=8)
    per_round = max(1, requests // rounds)
    cells: dict[tuple[str, int], tuple[list[Assembled], float]] = {}
    steps: list[tuple[int, Target | str]] = []
    for r in range(rounds):
        order: list[tuple[int, Target | str]] = [(level, t) for level in levels for t in targets
                                                 if level in levels_for.get(t.name, levels)]
        order += [(0, name) for name in references]
        steps += order if r % 2 == 0 else order[::-1]
    for level, t in tqdm(steps, desc="bench", disable=not progress, leave=False):
        if isinstance(t, str):
            out.setdefault(t, []).append(references[t]())
            continue
        recs, wall = run_level(t, level, max(per_round, level), max_tokens=max_tokens, client=clients[t.name])
        old_recs, old_wall = cells.get((t.name, level), ([], 0.0))
        cells[(t.name, level)] = (old_recs + recs, old_wall + wall)
    return [summarize(t.name, level, *cells[(t.name, level)]) for t in targets for level in levels
            if (t.name, level) in cells]


# ---------------------------------------------------------------- the limits: engine and memory

def llama_bench_binary() -> Path:
    from .servers.install import require_llama_tool
    return require_llama_tool("llama-bench")


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


def run_llama_bench(gguf: str | os.PathLike, *, threads: int, n_prompt: int = 64, n_gen: int = 64,
                    repetitions: int = 3, timeout: float = 600) -> dict[str, dict]:
    """llama-bench on the same GGUF and thread count as the server: the engine's speed without HTTP."""
    argv = [str(llama_bench_binary()), "-m", str(gguf), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
            "-r", str(repetitions), "-o", "json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise LabkitError(f"llama-bench failed (exit {proc.returncode}).", tried=" ".join(argv),
                          log_tail=proc.stderr[-2000:])
    return parse_llama_bench(proc.stdout)


def parse_batched_bench(text: str) -> dict[int, dict]:
    """{parallel sequences: row} from `llama-batched-bench --output-format jsonl`; a row keeps speed_tg (the
    aggregate decode tok/s of all sequences together) and speed_pp."""
    rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return {row["pl"]: {"parallel": row["pl"], "speed_tg": row["speed_tg"], "speed_pp": row["speed_pp"],
                        "threads": row["n_threads"], "n_gen": row["tg"]} for row in rows}


def run_batched_bench(gguf: str | os.PathLike, *, threads: int, parallel: Sequence[int] = (1, 4),
                      n_prompt: int = 32, n_gen: int = 64, timeout: float = 600) -> dict[int, dict]:
    """llama-batched-bench: the engine decoding 1 and N sequences in one batch, no HTTP, no sampling — how much
    continuous batching can gain at best on this CPU with this weight format."""
    from .servers.install import require_llama_tool
    binary = require_llama_tool("llama-batched-bench")
    argv = [str(binary), "-m", str(gguf), "-t", str(threads), "-c", "4096", "-npp", str(n_prompt),
            "-ntg", str(n_gen), "-npl", ",".join(map(str, parallel)), "--output-format", "jsonl"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise LabkitError(f"llama-batched-bench failed (exit {proc.returncode}).", tried=" ".join(argv),
                          log_tail=proc.stderr[-2000:])
    return parse_batched_bench(proc.stdout)


def requantized(quant: str, gguf: str | os.PathLike | None = None, *, timeout: float = 600) -> Path:
    """The lab's GGUF converted to another weight format by llama-quantize (cached in the labkit home), to see
    how the format decides which CPU kernels run. Requantizing a 4-bit model loses a little quality: for
    measuring speed, not for answers."""
    from .home import subdir
    from .models import model_path
    from .servers.install import require_llama_tool
    src = Path(gguf) if gguf else model_path()
    out = subdir("models") / f"{src.stem.split('.')[0]}.{quant}-from-{src.stem.split('.')[-1]}.gguf"
    if out.is_file():
        return out
    binary = require_llama_tool("llama-quantize")
    partial = out.with_suffix(".partial")
    argv = [str(binary), "--allow-requantize", str(src), str(partial), quant]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise LabkitError(f"llama-quantize to {quant} failed (exit {proc.returncode}).", tried=" ".join(argv),
                          log_tail=(proc.stdout + proc.stderr)[-2000:], fix="Is the format name right (Q4_0, Q8_0…)?")
    partial.replace(out)
    return out


def read_bandwidth(*, mib: int = 256, threads: int = 2, repeats: int = 5) -> float:
    """Bytes/s this machine reads from memory with `threads` threads (numpy sums a buffer far larger than cache;
    numpy releases the GIL, so the threads really run in parallel). Best of `repeats`."""
    import numpy as np
    buf = np.ones(mib * (1 << 20) // 8, dtype=np.float64)
    parts = np.array_split(buf, threads)
    best = 0.0
    for _ in range(repeats + 1):  # the first pass faults the pages in; it still counts only if it's the best
        barrier = threading.Barrier(threads + 1)

        def work(part):
            barrier.wait()
            part.sum()

        pool = [threading.Thread(target=work, args=(p,)) for p in parts]
        for t in pool:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        for t in pool:
            t.join()
        best = max(best, buf.nbytes / (time.perf_counter() - t0))
    return best


# ---------------------------------------------------------------- CPU cost of reading a stream

def record_stream_bytes(target: Target, *, max_tokens: int = 64) -> list[bytes]:
    """A real stream's body as the network delivered it (chunk boundaries kept), for the parser benchmark."""
    import httpx
    payload = {"model": target.model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
               "temperature": 0, "seed": 42, "stream": True, "stream_options": {"include_usage": True},
               **target.extra_body}
    with httpx.stream("POST", target.base_url + "/v1/chat/completions", json=payload, timeout=120,
                      headers={"Authorization": f"Bearer {target.api_key}"}) as r:
        r.raise_for_status()
        return list(r.iter_raw())


def data_payloads(chunks: Sequence[bytes]) -> list[str]:
    """The JSON texts of an SSE body the quickest way possible (split lines, keep `data: {...}`): the baseline."""
    body = b"".join(chunks).decode()
    return [line[6:] for line in body.splitlines() if line.startswith("data: {")]


def sse_cpu_ratio(chunks: Sequence[bytes], *, repeats: int = 200) -> dict[str, float]:
    """CPU seconds per chunk: labkit.sse (UTF-8, framing, strict checks, json) vs bare json.loads of the same
    payloads. Measured with process_time so other users of the machine don't count."""
    from .sse import iter_chunks, iter_events
    payloads = data_payloads(chunks)
    n = len(payloads)
    if not n:
        raise LabkitError("The recorded stream holds no `data: {...}` events.", fix="Record a real stream.")
    assert len(list(iter_chunks(iter_events(chunks)))) == n, "labkit.sse and the baseline disagree on the chunks"

    def cpu(fn: Callable[[], object]) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.process_time()
            for _ in range(repeats):
                fn()
            best = min(best, time.process_time() - t0)
        return best / repeats / n

    sse = cpu(lambda: list(iter_chunks(iter_events(chunks))))
    raw = cpu(lambda: [json.loads(p) for p in payloads])
    return {"chunks": n, "sse_us_per_chunk": sse * 1e6, "json_us_per_chunk": raw * 1e6, "ratio": sse / raw}


# ---------------------------------------------------------------- the six ratios

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
    """✔/✘ per ratio with its target — what `labkit bench` prints last."""
    lines = []
    for r in ratios:
        mark = {True: "✔", False: "✘", None: "·"}[r.ok]
        cmp = "≥" if r.higher_is_better else "≤"
        value = "  n/a" if r.ok is None else f"{r.value:5.2f}"
        lines.append(f"{mark} {r.name:<58} {value}  (target {cmp} {r.target:.2f})  {r.note}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the whole benchmark

def default_threads() -> int:
    """All cores, as llama.cpp itself defaults to: measured here on a quiet 2-core machine (interleaved A/B,
    128 tokens), --threads 2 decoded 113 tok/s vs 80 at --threads 1, and 154 vs 96 aggregate at 4 streams.
    On a *busy* machine fewer threads win (lesson 13, traps), and the API-overhead ratio is measured on a second
    server that leaves a core to the client (`api_threads`)."""
    return max(1, os.cpu_count() or 1)


@dataclass
class Settings:
    """How much to measure: `quick()` fits a lesson's time budget, the defaults are for the CLI."""

    threads: int = field(default_factory=lambda: default_threads())
    max_tokens: int = 128
    requests: int = 9
    rounds: int = 3
    levels: tuple[int, ...] = (1, 2, 4)
    bench_reps: int = 1  # llama-bench repetitions per round (each round runs it again, between the servers)
    bandwidth_mib: int = 256
    ollama: bool = True
    port: int = BENCH_PORT
    model: str | None = None  # a GGUF other than the lab's (e.g. another quantization of it)

    @property
    def api_threads(self) -> int:
        """Threads of the server that measures API overhead: one core is left for the client and HTTP."""
        return max(1, self.threads - 1)

    @classmethod
    def quick(cls) -> "Settings":
        return cls(max_tokens=16, requests=4, rounds=2, levels=(1, 4), bench_reps=1, bandwidth_mib=128)


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


def ollama_engine(server) -> str:
    """Which engine ran the model, from Ollama's log: `runner --ollama-engine --model …` is its Go engine on ggml,
    `runner --model …` its vendored llama.cpp (the default for models the Go engine isn't required for, unless
    OLLAMA_NEW_ENGINE=1)."""
    text = server.log_tail(4000) if server.proc else ""
    if not text:
        from .servers.ollama import log_path
        log = server.log_path or log_path(server.port)
        text = log.read_text(errors="replace")[-400_000:] if log.exists() else ""
    return engine_from_log(text)


def engine_from_log(text: str) -> str:
    """Pure part of `ollama_engine`, tested on a recorded Ollama log. Runner starts without `--model` only
    discover devices; the last one with `--model` serves the model."""
    starts = [line for line in text.splitlines() if "starting runner" in line and "--model" in line]
    if not starts:
        return "unknown (no model runner started in the log)"
    return "ollama (Go engine on ggml)" if "--ollama-engine" in starts[-1] else "llama.cpp runner (compatibility mode)"


def ollama_target(threads: int, *, name: str = "ollama", warm_tokens: int = 4) -> tuple[Target, str]:
    """Ollama on the lab's model with num_thread = `threads` (a derived model: `/v1` can't send options), warmed
    up so loading the runner is not measured; and which engine ran it."""
    import labkit
    from .procs import listener_env
    from .servers.ollama import derive_model
    ollama = labkit.up("ollama", export=False, quiet=True)
    model = derive_model(ollama, f"{ollama.model}-t{threads}", num_thread=threads)
    target = Target(name, ollama.base_url, model, ollama.key)
    stream_once(client_for(target, timeout=180), target, max_tokens=warm_tokens)  # loads the runner
    return target, f"{ollama_engine(ollama)}, GOMAXPROCS={listener_env(ollama.port, 'GOMAXPROCS') or 'Go default'}"


def run(settings: Settings | None = None, *, progress: bool = True) -> Report:
    """Start the benchmark's llama-servers (all threads, and one core fewer for the API-overhead ratios, both
    --parallel 4), find Ollama, measure everything in one interleaved run."""
    import labkit
    from .models import check_gguf, model_path
    s = settings or Settings()
    gguf = check_gguf(Path(s.model)) if s.model else model_path()
    common: dict = dict(parallel=4, export=False, quiet=True)
    alias = "smollm2-bench"
    if s.model:
        common["model"], alias = str(gguf), f"{gguf.stem}-bench"
    main = labkit.up("llamacpp", port=s.port, alias=alias, threads=s.threads, **common)
    targets = [Target.from_server(main, "llama-server")]
    levels_for: dict[str, Sequence[int]] = {}
    api_name = "llama-server"
    if s.api_threads != s.threads:
        api = labkit.up("llamacpp", port=s.port + 1, alias=alias + "-api", threads=s.api_threads, **common)
        api_name = f"llama-server t{s.api_threads}"
        targets.append(Target.from_server(api, api_name))
        levels_for[api_name] = (1,)
    m: dict = {"model": gguf.name, "threads": s.threads, "api_threads": s.api_threads, "max_tokens": s.max_tokens}
    if s.ollama:
        try:
            otarget, m["ollama_engine"] = ollama_target(s.threads)
            targets.append(otarget)
            levels_for["ollama"] = (1,)
            if s.api_threads != s.threads:  # Ollama's server and runner need a core too: see it at one fewer
                oapi, _ = ollama_target(s.api_threads, name=f"ollama t{s.api_threads}")
                targets.append(oapi)
                levels_for[oapi.name] = (1,)
        except Exception as exc:  # noqa: BLE001 - a broken Ollama drops its ratio, not the whole benchmark
            m["ollama_missing"] = f"Ollama not measured: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
    n = s.max_tokens
    refs: dict[str, Callable[[], object]] = {  # the engine and memory limits, measured between the targets
        "llama-bench": lambda: run_llama_bench(gguf, threads=s.threads, n_prompt=n, n_gen=n,
                                               repetitions=s.bench_reps),
        "llama-batched-bench": lambda: run_batched_bench(gguf, threads=s.threads, parallel=(1, 4), n_gen=n),
        "bandwidth": lambda: read_bandwidth(mib=s.bandwidth_mib, threads=s.threads)}
    if s.api_threads != s.threads:
        refs["llama-bench api"] = lambda: run_llama_bench(gguf, threads=s.api_threads, n_prompt=n, n_gen=n,
                                                          repetitions=s.bench_reps)
        if s.api_threads == 1:  # how decode and bandwidth scale from 1 thread to all: which one is the limit
            refs["bandwidth 1"] = lambda: read_bandwidth(mib=s.bandwidth_mib, threads=1)
    got: dict[str, list] = {}
    try:
        summaries = interleave(targets, levels=s.levels, requests=s.requests, max_tokens=n, rounds=s.rounds,
                               progress=progress, levels_for=levels_for, references=refs, reference_results=got)
    finally:  # the derived models (num_thread) are the benchmark's: nothing of it stays in Ollama's store
        from .servers.ollama import remove_model
        for t in targets:
            if t.name.startswith("ollama"):
                remove_model(t.base_url, t.model)
    by = {(x.target, x.concurrency): x for x in summaries}
    one, api_one = by[("llama-server", 1)], by[(api_name, 1)]
    m.update(client_decode_tps=api_one.decode_tps_med, server_decode_tps=api_one.server_decode_tps_med,
             decode_tps_all=one.decode_tps_med, output_tps_1=one.output_tps,
             output_tps_4=by.get(("llama-server", 4), one).output_tps)
    if ("ollama", 1) in by:
        m["ollama_decode_tps"] = by[("ollama", 1)].decode_tps_med
    if (f"ollama t{s.api_threads}", 1) in by:
        m["ollama_decode_tps_api"] = by[(f"ollama t{s.api_threads}", 1)].decode_tps_med
    med = statistics.median
    m.update(llama_bench_tg=med(b[f"tg{n}"]["tokens_per_s"] for b in got["llama-bench"]),
             llama_bench_pp=med(b[f"pp{n}"]["tokens_per_s"] for b in got["llama-bench"]),
             model_bytes=got["llama-bench"][0][f"tg{n}"]["model_bytes"], n_gen=n, n_prompt=n,
             engine_batch_ratio=med(b[4]["speed_tg"] / b[1]["speed_tg"] for b in got["llama-batched-bench"]),
             read_bandwidth=max(got["bandwidth"]))  # bandwidth: the best is the hardware's, the rest is noise
    m["bandwidth_tps"] = m["read_bandwidth"] / m["model_bytes"]
    if "llama-bench api" in got:
        m["llama_bench_tg_api"] = med(b[f"tg{n}"]["tokens_per_s"] for b in got["llama-bench api"])
    if "bandwidth 1" in got:
        m["tg_scaling"] = m["llama_bench_tg"] / m["llama_bench_tg_api"]
        m["bw_scaling"] = m["read_bandwidth"] / max(got["bandwidth 1"])
    sse = sse_cpu_ratio(record_stream_bytes(targets[0], max_tokens=s.max_tokens))
    m.update(sse_ratio=sse["ratio"], sse_us=sse["sse_us_per_chunk"], json_us=sse["json_us_per_chunk"])
    return Report(summaries, m, compute_ratios(m))


# ---------------------------------------------------------------- command line

def add_cli(subparsers) -> None:
    """Register `labkit bench` on the main CLI's subparsers."""
    p = subparsers.add_parser("bench", help="measure latency/throughput vs the engine and memory limits")
    _arguments(p)
    p.set_defaults(func=cmd_bench)


def _arguments(p) -> None:
    p.add_argument("--quick", action="store_true", help="short settings (what the lesson uses)")
    p.add_argument("--threads", type=int, default=default_threads(), help="server and llama-bench threads")
    p.add_argument("--max-tokens", type=int, help="output tokens per request (fixed with ignore_eos)")
    p.add_argument("--requests", type=int, help="requests per (target, level)")
    p.add_argument("--no-ollama", action="store_true", help="llama-server only")
    p.add_argument("--quant", metavar="TYPE", help="bench the lab's model converted to TYPE (e.g. Q4_0) by "
                   "llama-quantize: weight formats get different CPU kernels")
    p.add_argument("--model", metavar="GGUF", help="another GGUF than the lab's (llama-server and the engine "
                   "references; Ollama keeps the lab's model)")
    p.add_argument("--json", metavar="FILE", help="also write the full report as JSON")


def cmd_bench(args) -> int:
    s = Settings.quick() if args.quick else Settings()
    s.threads = args.threads
    s.max_tokens = args.max_tokens or s.max_tokens
    s.requests = args.requests or s.requests
    s.model = str(requantized(args.quant)) if args.quant else args.model
    s.ollama = not args.no_ollama and not s.model
    report = run(s)
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=1, ensure_ascii=False) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys
    p = argparse.ArgumentParser(prog="labkit bench", description=__doc__.splitlines()[0])
    _arguments(p)
    args = p.parse_args(argv)
    try:
        return cmd_bench(args)
    except LabkitError as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
