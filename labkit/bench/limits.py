"""The limits a server is measured against, each measured here: the engine without HTTP (llama-bench,
llama-batched-bench), memory read bandwidth, and the CPU cost of reading a stream (labkit.sse vs json.loads)."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from ..cpu import llama_cpp_env
from ..errors import LabkitError
from .metrics import data_payloads, parse_batched_bench, parse_llama_bench


def llama_bench_binary() -> Path:
    from ..servers.install import require_tool
    return require_tool("llama-bench")


def run_llama_bench(gguf: str | os.PathLike, *, threads: int, n_prompt: int = 64, n_gen: int = 64,
                    repetitions: int = 3, timeout: float = 600) -> dict[str, dict]:
    """llama-bench on the same GGUF and thread count as the server: the engine's speed without HTTP."""
    argv = [str(llama_bench_binary()), "-m", str(gguf), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
            "-r", str(repetitions), "-o", "json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=llama_cpp_env())
    if proc.returncode != 0:
        raise LabkitError(f"llama-bench failed (exit {proc.returncode}).", tried=" ".join(argv),
                          log_tail=proc.stderr[-2000:])
    return parse_llama_bench(proc.stdout)


def run_batched_bench(gguf: str | os.PathLike, *, threads: int, parallel: Sequence[int] = (1, 4),
                      n_prompt: int = 32, n_gen: int = 64, timeout: float = 600) -> dict[int, dict]:
    """llama-batched-bench: the engine decoding 1 and N sequences in one batch, no HTTP, no sampling — how much
    continuous batching can gain at best on this CPU with this weight format."""
    from ..servers.install import require_tool
    binary = require_tool("llama-batched-bench")
    argv = [str(binary), "-m", str(gguf), "-t", str(threads), "-c", "4096", "-npp", str(n_prompt),
            "-ntg", str(n_gen), "-npl", ",".join(map(str, parallel)), "--output-format", "jsonl"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=llama_cpp_env())
    if proc.returncode != 0:
        raise LabkitError(f"llama-batched-bench failed (exit {proc.returncode}).", tried=" ".join(argv),
                          log_tail=proc.stderr[-2000:])
    return parse_batched_bench(proc.stdout)


def requantized(quant: str, gguf: str | os.PathLike | None = None, *, timeout: float = 600) -> Path:
    """The lab's GGUF converted to another weight format by llama-quantize (cached in the labkit home), to see
    how the format decides which CPU kernels run. Requantizing a 4-bit model loses a little quality: for
    measuring speed, not for answers."""
    from ..home import subdir
    from ..models import model_path
    from ..servers.install import require_tool
    src = Path(gguf) if gguf else model_path()
    out = subdir("models") / f"{src.stem.split('.')[0]}.{quant}-from-{src.stem.split('.')[-1]}.gguf"
    if out.is_file():
        return out
    binary = require_tool("llama-quantize")
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


def sse_cpu_ratio(chunks: Sequence[bytes], *, repeats: int = 200) -> dict[str, float]:
    """CPU seconds per chunk: labkit.sse (UTF-8, framing, strict checks, json) vs bare json.loads of the same
    payloads. Measured with process_time so other users of the machine don't count."""
    from ..sse import iter_chunks, iter_events
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

