"""Load on loopback: 16 concurrent streamed requests × 4 rounds against a llama-server with --parallel 16.

Every reply must be complete (a finish_reason, `[DONE]` seen, non-empty text, valid UTF-8 — labkit.sse is
strict about all three) and none lost or mixed up: one distinct id per stream, and the prompt-token count of
reply i matches request i (prompts have different lengths) in every round. Bounded: 64 requests, 8 tokens each.
"""
from __future__ import annotations

import asyncio
import time

import pytest

import labkit
from labkit.sse import aassemble, astream_chat

CONCURRENT, ROUNDS, MAX_TOKENS = 16, 4, 8
BUDGET_S = 240  # whole test, on a 2-core machine shared with other work


@pytest.fixture(scope="module")
def server():
    s = labkit.up("llamacpp", port=8154, model="smollm2-load", parallel=CONCURRENT, ctx_size=CONCURRENT * 256,
                  export=False, quiet=True)
    yield s
    s.stop()


def _payload(model: str, i: int) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "你好 " + "一二三 " * i}],
            "max_tokens": MAX_TOKENS, "temperature": 0, "seed": 42, "stream_options": {"include_usage": True}}


async def _one(server: labkit.Server, i: int):
    chunks = astream_chat(server.base_url, _payload(server.model, i), api_key=server.key, timeout=BUDGET_S)
    ids: set[str] = set()

    async def tap():
        async for chunk in chunks:
            ids.add(chunk["id"])
            yield chunk
    reply = await aassemble(tap())
    return i, reply, ids


async def _round(server: labkit.Server):
    return await asyncio.gather(*(_one(server, i) for i in range(CONCURRENT)))


@pytest.mark.timeout(BUDGET_S + 60)
def test_sixteen_concurrent_streams_four_rounds(server):
    t0 = time.monotonic()
    tokens_of: dict[int, int] = {}
    for rnd in range(ROUNDS):
        results = asyncio.run(asyncio.wait_for(_round(server), BUDGET_S))
        assert len(results) == CONCURRENT, "a request was lost"
        seen_ids: set[str] = set()
        for i, reply, ids in results:
            assert len(ids) == 1, f"stream {i} carried chunks of several completions: {ids}"
            seen_ids |= ids
            assert reply.finish_reason in ("stop", "length"), (rnd, i, reply)
            assert reply.text.strip(), f"round {rnd} stream {i} is empty"
            reply.text.encode("utf-8")  # a str from the strict decoder: valid UTF-8 by construction
            assert reply.usage and 0 < reply.usage["completion_tokens"] <= MAX_TOKENS
            tokens_of.setdefault(i, reply.usage["prompt_tokens"])
            assert reply.usage["prompt_tokens"] == tokens_of[i], f"round {rnd}: reply {i} answers another prompt"
        assert len(seen_ids) == CONCURRENT, "two streams shared one completion id"
        assert time.monotonic() - t0 < BUDGET_S, f"round {rnd} ran past the {BUDGET_S} s budget"
    counts = [tokens_of[i] for i in range(CONCURRENT)]
    assert counts == sorted(counts) and len(set(counts)) == CONCURRENT, counts
    assert server.alive()
