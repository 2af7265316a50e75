"""`labkit probe URL…` on the command line (also `python -m labkit.probe`)."""
from __future__ import annotations

from ..servers.base import PLACEHOLDER_KEY
from .checks import format_table
from .runner import default_model, probe


def add_cli(subparsers) -> None:
    """Register `labkit probe` on the main CLI's subparsers."""
    p = subparsers.add_parser("probe", help="OpenAI-API compatibility checks, ✔/✘/≠ per server, side by side")
    _arguments(p)
    p.set_defaults(func=cmd_probe)


def _arguments(p) -> None:
    p.add_argument("urls", nargs="*", help="servers, e.g. http://127.0.0.1:8080 or its /v1 (default: the lab's servers)")
    p.add_argument("--model", action="append", help="model name per URL (default: the first of /v1/models)")
    p.add_argument("--api-key", default=PLACEHOLDER_KEY)
    p.add_argument("--only", action="append", help="run only this check (repeatable)")
    p.add_argument("--brief", action="store_true", help="marks only, no details")


def cmd_probe(args) -> int:
    from ..servers import KINDS, port_of
    urls = args.urls or [f"http://127.0.0.1:{port_of(kind)}" for kind in KINDS]
    models = args.model or []
    results = {}
    for i, url in enumerate(urls):
        model = models[i] if i < len(models) else default_model(url, args.api_key)
        results[f"{url.split('//')[-1]}"] = probe(url, model, api_key=args.api_key, only=args.only)
    print(format_table(results, details=not args.brief))
    # a known difference (≠: failed by the server's design) is not a failure of the probe
    return 0 if all(c.ok is not False or c.known for checks in results.values() for c in checks) else 1
