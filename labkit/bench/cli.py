"""`labkit bench` on the command line (also `python -m labkit.bench`)."""
from __future__ import annotations

import json
from pathlib import Path

from .limits import requantized
from .runner import Settings, default_threads, run


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
    p.add_argument("--gguf", help="another GGUF than the lab's (llama-server and the engine "
                   "references; Ollama keeps the lab's model)")
    p.add_argument("--json", metavar="FILE", help="also write the full report as JSON")


def cmd_bench(args) -> int:
    s = Settings.quick() if args.quick else Settings()
    s.threads = args.threads
    s.max_tokens = args.max_tokens or s.max_tokens
    s.requests = args.requests or s.requests
    s.gguf = str(requantized(args.quant)) if args.quant else args.gguf
    s.ollama = not args.no_ollama and not s.gguf
    report = run(s)
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_json(), indent=1, ensure_ascii=False) + "\n")
    return 0
