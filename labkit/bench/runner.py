"""The benchmark's runs: targets, timed streams, interleaved A/B rounds, Ollama as a target, and `run()`."""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..servers.base import PLACEHOLDER_KEY
from ..sse import Assembled
from .limits import read_bandwidth, run_batched_bench, run_llama_bench, sse_cpu_ratio
from .metrics import Report, Summary, compute_ratios, engine_from_log, fold_measurements, summarize

PROMPT = "Write a long story about a robot who learns to paint. Use many sentences."
BENCH_PORT = 8160  # the benchmark's own llama-server (fixed --threads, --parallel 4)


@dataclass
class Target:
    """A server to measure: where it is, the model name, and extra request fields it understands."""

    name: str
    base_url: str  # the server root (…:8080), not /v1
    model: str
    api_key: str = PLACEHOLDER_KEY
    extra_body: dict = field(default_factory=dict)

    @classmethod
    def from_server(cls, server, name: str | None = None) -> "Target":
        """From a labkit Server; llama-server gets ignore_eos so every request decodes exactly max_tokens."""
        from ..servers import KINDS
        extra = dict(KINDS[server.kind].bench_extra) if server.kind in KINDS else {}
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
    ollama_api: bool = True  # Ollama also at one thread fewer (the Ollama ratio's note); quick() leaves it out
    port: int = BENCH_PORT
    gguf: str | None = None  # a GGUF other than the lab's (e.g. another quantization of it)

    @property
    def api_threads(self) -> int:
        """Threads of the server that measures API overhead: one core is left for the client and HTTP."""
        return max(1, self.threads - 1)

    @classmethod
    def quick(cls) -> "Settings":
        return cls(max_tokens=16, requests=4, rounds=2, levels=(1, 4), bench_reps=1, bandwidth_mib=128,
                   ollama_api=False)


def ollama_engine(server) -> str:
    """Which engine ran the model, from Ollama's log: `runner --ollama-engine --model …` is its Go engine on ggml,
    `runner --model …` its vendored llama.cpp (the default for models the Go engine isn't required for, unless
    OLLAMA_NEW_ENGINE=1)."""
    text = server.log_tail(4000) if server.proc else ""
    if not text:
        from ..servers.ollama import log_path
        log = server.log_path or log_path(server.port)
        text = log.read_text(errors="replace")[-400_000:] if log.exists() else ""
    return engine_from_log(text)


def ollama_target(threads: int, *, name: str = "ollama", warm_tokens: int = 4) -> tuple[Target, str]:
    """Ollama on the lab's model with num_thread = `threads` (a derived model: `/v1` can't send options), warmed
    up so loading the runner is not measured; and which engine ran it."""
    import labkit
    from ..procs import listener_env
    from ..servers.ollama import derive_model
    ollama = labkit.up("ollama", export=False, quiet=True)
    # one name per run: two benchmarks at once (a lesson and `labkit bench`) must not delete each other's model
    model = derive_model(ollama, f"{ollama.model}-t{threads}-{os.getpid()}", num_thread=threads)
    target = Target(name, ollama.base_url, model, ollama.key)
    stream_once(client_for(target, timeout=180), target, max_tokens=warm_tokens)  # loads the runner
    return target, f"{ollama_engine(ollama)}, GOMAXPROCS={listener_env(ollama.port, 'GOMAXPROCS') or 'Go default'}"


def start_targets(s: Settings, gguf: Path, m: dict) -> tuple[list[Target], dict[str, Sequence[int]]]:
    """The benchmark's llama-servers (all threads, and one core fewer for the API-overhead ratios, both
    --parallel 4) and Ollama at the same thread counts; which levels each is measured at. Notes go into `m`."""
    import labkit
    common: dict = dict(parallel=4, export=False, quiet=True)
    model = "smollm2-bench"
    if s.gguf:
        common["gguf"], model = str(gguf), f"{gguf.stem}-bench"
    main = labkit.up("llamacpp", port=s.port, model=model, threads=s.threads, **common)
    targets = [Target.from_server(main, "llama-server")]
    levels_for: dict[str, Sequence[int]] = {}
    if s.api_threads != s.threads:
        api = labkit.up("llamacpp", port=s.port + 1, model=model + "-api", threads=s.api_threads, **common)
        targets.append(Target.from_server(api, f"llama-server t{s.api_threads}"))
        levels_for[targets[-1].name] = (1,)
    if s.ollama:
        try:
            otarget, m["ollama_engine"] = ollama_target(s.threads)
            targets.append(otarget)
            levels_for["ollama"] = (1,)
            if s.ollama_api and s.api_threads != s.threads:  # Ollama's Go code needs a core too: one fewer
                oapi, _ = ollama_target(s.api_threads, name=f"ollama t{s.api_threads}")
                targets.append(oapi)
                levels_for[oapi.name] = (1,)
        except Exception as exc:  # noqa: BLE001 - a broken Ollama drops its ratio, not the whole benchmark
            m["ollama_missing"] = f"Ollama not measured: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
    return targets, levels_for


def references(s: Settings, gguf: Path) -> dict[str, Callable[[], object]]:
    """The engine and memory limits, each a callable that `interleave` runs once per round between the targets."""
    n = s.max_tokens
    refs: dict[str, Callable[[], object]] = {
        "llama-bench": lambda: run_llama_bench(gguf, threads=s.threads, n_prompt=n, n_gen=n,
                                               repetitions=s.bench_reps),
        "llama-batched-bench": lambda: run_batched_bench(gguf, threads=s.threads, parallel=(1, 4), n_gen=n),
        "bandwidth": lambda: read_bandwidth(mib=s.bandwidth_mib, threads=s.threads)}
    if s.api_threads != s.threads:
        refs["llama-bench api"] = lambda: run_llama_bench(gguf, threads=s.api_threads, n_prompt=n, n_gen=n,
                                                          repetitions=s.bench_reps)
        if s.api_threads == 1:  # how decode and bandwidth scale from 1 thread to all: which one is the limit
            refs["bandwidth 1"] = lambda: read_bandwidth(mib=s.bandwidth_mib, threads=1)
    return refs


def run(settings: Settings | None = None, *, progress: bool = True) -> Report:
    """Start the targets, measure them and the limits in one interleaved run, and judge the six ratios."""
    from ..models import check_gguf, model_path
    from ..servers.ollama import remove_model
    s = settings or Settings()
    gguf = check_gguf(Path(s.gguf)) if s.gguf else model_path()
    m: dict = {"model": gguf.name, "threads": s.threads, "api_threads": s.api_threads, "max_tokens": s.max_tokens}
    targets, levels_for = start_targets(s, gguf, m)
    got: dict[str, list] = {}
    try:
        summaries = interleave(targets, levels=s.levels, requests=s.requests, max_tokens=s.max_tokens,
                               rounds=s.rounds, progress=progress, levels_for=levels_for,
                               references=references(s, gguf), reference_results=got)
    finally:  # the derived models (num_thread) are the benchmark's: nothing of it stays in Ollama's store
        for t in targets:
            if t.name.startswith("ollama"):
                remove_model(t.base_url, t.model)
    m.update(fold_measurements(summaries, got, n=s.max_tokens, api_threads=s.api_threads))
    sse = sse_cpu_ratio(record_stream_bytes(targets[0], max_tokens=s.max_tokens))
    m.update(sse_ratio=sse["ratio"], sse_us=sse["sse_us_per_chunk"], json_us=sse["json_us_per_chunk"])
    return Report(summaries, m, compute_ratios(m))
