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

    metrics.py  per-request metrics, summaries, parsers of the tools' output, the six ratios — pure, unit-tested
    limits.py   llama-bench, llama-batched-bench, llama-quantize, read bandwidth, the SSE parser's CPU cost
    runner.py   targets, timed streams, interleaved rounds, Ollama as a target, `run()`
    cli.py      `labkit bench`, `python -m labkit.bench`
"""
from __future__ import annotations

from .cli import add_cli
from .limits import (llama_bench_binary, read_bandwidth, requantized, run_batched_bench, run_llama_bench,
                     sse_cpu_ratio)
from .metrics import (Ratio, Report, Summary, compute_ratios, data_payloads, engine_from_log, format_ratios,
                      fold_measurements, format_summaries, itls, parse_batched_bench, parse_llama_bench, percentile, regime,
                      server_decode_tps, summarize, tpot)
from .runner import (BENCH_PORT, PROMPT, Settings, Target, client_for, default_threads, interleave, ollama_engine,
                     ollama_target, record_stream_bytes, run, run_level, stream_once)

__all__ = ["BENCH_PORT", "PROMPT", "Ratio", "Report", "Settings", "Summary", "Target", "add_cli", "client_for",
           "compute_ratios", "data_payloads", "default_threads", "engine_from_log", "fold_measurements", "format_ratios",
           "format_summaries", "interleave", "itls", "llama_bench_binary", "ollama_engine", "ollama_target",
           "parse_batched_bench", "parse_llama_bench", "percentile", "read_bandwidth", "record_stream_bytes",
           "regime", "requantized", "run", "run_batched_bench", "run_level", "run_llama_bench", "server_decode_tps",
           "sse_cpu_ratio", "stream_once", "summarize", "tpot"]
