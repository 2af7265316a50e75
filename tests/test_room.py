"""The workshop room on loopback: 30 learners streaming at once through the room's nginx, every request answered
or refused with a clear status, nothing hung, one learner's limit not touching the others, the live view's rows
read from the real access log, and a learner's `labkit.up()` pointed at the room starting nothing locally."""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

import httpx
import pytest

from labkit.home import subdir
from labkit.room import parse_room_log, per_learner, room_config, seats, start_room, tokens_per_second

LEARNERS = 30
PORT = 8240  # llama-server behind it on 8250; the course's lessons use none of these


def test_room_config_maps_every_key_to_its_learner(tmp_path):
    taken = seats(3)
    conf = room_config({PORT: "http://127.0.0.1:8250"}, taken=taken, prefix=tmp_path, host="0.0.0.0",
                       per_minute=30, burst=5)
    for seat in taken:
        assert f'"Bearer {seat.key}" {seat.learner};' in conf
    assert "rate=30r/m" in conf and "burst=5" in conf and "listen 0.0.0.0:8240" in conf
    assert len({s.key for s in seats(50)}) == 50, "keys are random, one per learner"
    with pytest.raises(ValueError):
        seats(0)


async def stream_one(client: httpx.AsyncClient, key: str, i: int) -> dict:
    started = time.perf_counter()
    first, tokens = None, 0
    body = {"model": "any", "messages": [{"role": "user", "content": f"Count from {i} to {i + 5}."}],
            "max_tokens": 8, "temperature": 0, "seed": 42, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body,
                             headers={"Authorization": f"Bearer {key}"}) as r:
        if r.status_code != 200:
            return {"status": r.status_code, "body": (await r.aread()).decode()}
        done = False
        async for line in r.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                delta = json.loads(line[6:])["choices"][0]["delta"] if json.loads(line[6:])["choices"] else {}
                if delta.get("content"):
                    first = first or time.perf_counter() - started
                    tokens += 1
    return {"status": 200, "done": done, "ttft": first, "tokens": tokens, "seconds": time.perf_counter() - started}


async def everyone_at_once(taken) -> tuple[list[dict], float]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=60) as client:
        t0 = time.perf_counter()
        results = await asyncio.wait_for(asyncio.gather(*(stream_one(client, s.key, i)
                                                          for i, s in enumerate(taken))), timeout=120)
        return results, time.perf_counter() - t0


def test_thirty_learners_stream_at_once_and_limits_hold_per_key():
    with start_room(LEARNERS, host="127.0.0.1", port=PORT, ollama=False, per_minute=60, burst=5) as room:
        results, wall = asyncio.run(everyone_at_once(room.taken))
        assert [r["status"] for r in results] == [200] * LEARNERS, results
        assert all(r["done"] and r["tokens"] >= 1 for r in results), "every stream ended with [DONE]"
        ttfts = sorted(r["ttft"] for r in results)
        p95 = ttfts[int(0.95 * (len(ttfts) - 1))]
        total = sum(r["tokens"] for r in results)
        report = {"learners": LEARNERS, "p95_ttft_s": round(p95, 2), "median_ttft_s": round(statistics.median(ttfts), 2),
                  "tokens": total, "seconds": round(wall, 1), "tokens_per_s": round(total / wall, 1)}
        (subdir("run") / "room-load.json").write_text(json.dumps(report))  # the figures WORKSHOP.md quotes
        print(f"\n{report}")

        url = f"http://127.0.0.1:{PORT}/v1/models"
        greedy, polite = room.taken[0], room.taken[1]
        codes = [httpx.get(url, headers={"Authorization": f"Bearer {greedy.key}"}, timeout=10).status_code
                 for _ in range(12)]
        assert codes.count(429) >= 1 and set(codes) <= {200, 429}, codes
        limited = httpx.get(url, headers={"Authorization": f"Bearer {greedy.key}"}, timeout=10)
        assert limited.status_code == 429 and limited.json()["error"]["type"] == "rate_limit"
        assert httpx.get(url, headers={"Authorization": f"Bearer {polite.key}"}, timeout=10).status_code == 200, \
            "another learner is not limited by the first one's burst"
        stranger = httpx.get(url, headers={"Authorization": "Bearer sk-guess"}, timeout=10)
        assert stranger.status_code == 401 and "LABKIT_KEY" in stranger.json()["error"]["message"]

        time.sleep(0.5)  # nginx writes its access log line when a request ends
        rows = per_learner(parse_room_log(room.access_log.read_text()))
        assert {f"learner-{i:02d}" for i in range(1, LEARNERS + 1)} <= set(rows)
        assert rows[greedy.learner]["refused"] >= 1 and rows[polite.learner]["refused"] == 0
        metrics = httpx.get(room.servers[0].base_url + "/metrics", timeout=10).text
        assert tokens_per_second(metrics) is not None and tokens_per_second(metrics) > 0

        env = {**os.environ, "LABKIT_SERVER": f"http://127.0.0.1:{PORT}", "LABKIT_KEY": polite.key}
        learner = subprocess.run([sys.executable, "-c", "import labkit; s = labkit.up('llamacpp', quiet=True); "
                                  "print(s.port, s.owned, s.api_key)"], env=env, capture_output=True, text=True,
                                 timeout=60)
        assert learner.stdout.split() == [str(PORT), "False", polite.key], learner.stderr
        env["LABKIT_KEY"] = "sk-wrong"
        refused = subprocess.run([sys.executable, "-c", "import labkit; labkit.up('llamacpp', quiet=True)"],
                                 env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "refused the key in LABKIT_KEY (HTTP 401)" in refused.stderr
