"""The Postman collection in data/postman/ runs green with newman against both session servers."""
from __future__ import annotations

import json

import pytest

import labkit
from labkit import postman
from labkit.setup import newman_bin

pytestmark = pytest.mark.skipif(newman_bin() is None, reason="newman missing: labkit setup --only newman")


def test_collection_is_v21_with_tests_on_every_request():
    coll = json.loads(postman.COLLECTION.read_text())
    assert coll["info"]["schema"].endswith("/v2.1.0/collection.json")
    for item in coll["item"]:
        assert any(e["listen"] == "test" and e["script"]["exec"] for e in item["event"]), item["name"]
    for kind in labkit.KINDS:
        env = json.loads(postman.environment_file(kind).read_text())
        assert {v["key"] for v in env["values"]} >= {"baseUrl", "model", "apiKey"}


@pytest.mark.parametrize("kind", ["llamacpp", "ollama"])
def test_newman_green(kind):
    server = labkit.up(kind, export=False, quiet=True)
    run = postman.run_collection(server, timeout=120)  # per request; a dead server fails fast
    assert run.ok, f"{run.failures}\n{run.output[-3000:]}"
    expected = 4 if kind == "ollama" else 3  # /api/generate is skipped on llama-server
    assert run.requests == expected and run.assertions >= 8
