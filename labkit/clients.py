"""Pure helpers for the client lessons (openai-python, langchain-openai): read servers' extra fields and errors.
(A stream of typed chunks folds with `labkit.sse.assemble`, like any other stream.)"""
from __future__ import annotations

import re
from typing import Any, Mapping

from .sse import STANDARD_FIELDS, as_dict

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['context_overflow', 'server_extras']


def server_extras(response: Any) -> dict:
    """The non-standard top-level fields a server added (llama-server's `timings`, ...), which typed clients keep
    but never document."""
    return {k: v for k, v in as_dict(response).items() if k not in STANDARD_FIELDS}


_OVERFLOW = re.compile(r"request \((\d+) tokens\) exceeds the available context size \((\d+) tokens\)")


def context_overflow(error: Any) -> tuple[int, int] | None:
    """(prompt tokens, context size) when an error body is llama-server's "prompt too long" 400, else None."""
    body = as_dict(error) if not isinstance(error, str) else {"message": error}
    body = body.get("error", body) if isinstance(body.get("error"), Mapping) else body
    if "n_prompt_tokens" in body and "n_ctx" in body:
        return int(body["n_prompt_tokens"]), int(body["n_ctx"])
    match = _OVERFLOW.search(str(body.get("message", "")))
    return (int(match[1]), int(match[2])) if match else None
