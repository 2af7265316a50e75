"""Embeddings: the pure helpers on recorded real responses (data/embeddings/), then both real servers serving
all-MiniLM-L6-v2 — agreement between them, and each kind of bad input with its clear error or documented result."""
from __future__ import annotations

import json

import httpx
import pytest

from labkit import embeddings as E
from labkit.home import data_dir

RECORDED = json.loads((data_dir() / "embeddings" / "v1_embeddings_float_and_base64.json").read_text())["responses"]


# ------------------------------------------------------------------------------------------ pure, recorded
@pytest.mark.parametrize("server", ["llamacpp", "ollama"])
def test_base64_decodes_to_the_same_floats_the_server_sends_as_json(server):
    floats, packed = RECORDED[f"{server}_float"], RECORDED[f"{server}_base64"]
    assert isinstance(packed["data"][0]["embedding"], str)
    for a, b in zip(E.vectors(floats), E.vectors(packed)):
        assert len(a) == len(b) == E.DIMENSIONS
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-6  # JSON prints floats rounded; the bytes are exact


def test_recorded_vectors_are_unit_length_and_the_two_servers_agree():
    ll, ol = E.vectors(RECORDED["llamacpp_float"]), E.vectors(RECORDED["ollama_float"])
    for v in ll + ol:
        assert abs(E.norm(v) - 1) < 1e-4
    for a, b in zip(ll, ol):
        assert E.cosine(a, b) > 0.99


def test_cosine_ignores_length_and_top_k_ranks_best_first():
    assert E.cosine([1, 0], [5, 0]) == pytest.approx(1.0)
    assert E.cosine([1, 0], [0, 3]) == pytest.approx(0.0)
    assert E.cosine([1, 1], [-2, -2]) == pytest.approx(-1.0)
    docs = [[0, 1], [1, 0.1], [1, 1], [-1, 0]]
    ranked = E.top_k([1, 0], docs, k=2)
    assert [i for i, _ in ranked] == [1, 2] and ranked[0][1] > ranked[1][1]
    assert E.top_k([1, 0], docs, k=0) == [] and len(E.top_k([1, 0], docs, k=10)) == 4


def test_bad_vectors_are_clear_errors():
    with pytest.raises(ValueError, match="different lengths"):
        E.cosine([1, 0, 0], [1, 0])
    with pytest.raises(ValueError, match="zero vector"):
        E.cosine([0, 0], [1, 0])
    with pytest.raises(ValueError, match="whole number of float32s"):
        E.decode_base64("AAAAAAA=")  # 5 bytes
    with pytest.raises(ValueError):
        E.decode_base64("not base64!")


# --------------------------------------------------------------------------------------------- live servers
@pytest.fixture(scope="module")
def llama():
    server = E.embedding_server("llamacpp", quiet=True)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ollama():
    from labkit.servers.install import find_ollama
    if not find_ollama():
        pytest.skip("the Ollama binary is not built yet (`labkit setup` builds it)")
    return E.embedding_server("ollama", quiet=True)


def post(server, body: dict) -> httpx.Response:
    return httpx.post(server.openai_base_url + "/embeddings", json={"model": E.NAME, **body}, timeout=60)


def test_both_servers_serve_the_same_model(llama, ollama):
    texts = ["The lab runs llama-server on port 8080.", "x", "hello world"]
    ra, rb = post(llama, {"input": texts}).json(), post(ollama, {"input": texts}).json()
    a, b = E.vectors(ra), E.vectors(rb)
    assert [len(v) for v in a] == [len(v) for v in b] == [E.DIMENSIONS] * 3
    assert all(E.cosine(x, y) > 0.99 for x, y in zip(a, b))
    assert ra["usage"]["prompt_tokens"] == rb["usage"]["prompt_tokens"], "same tokenizer on English text"


def test_chinese_text_is_tokenized_differently_by_the_two_servers(llama, ollama):
    """An English WordPiece vocabulary has no 你/好/界: both servers fall back to [UNK], but not in the same way
    (llama.cpp 7 tokens, Ollama 8), so the same GGUF gives visibly different vectors — lesson 16 shows it."""
    ra, rb = post(llama, {"input": "你好，世界"}).json(), post(ollama, {"input": "你好，世界"}).json()
    assert ra["usage"]["prompt_tokens"] != rb["usage"]["prompt_tokens"]
    pieces = [t["piece"] for t in httpx.post(llama.base_url + "/tokenize", json={"content": "你好，世界",
                                                                                "with_pieces": True}).json()["tokens"]]
    assert "[UNK]" in pieces
    assert E.cosine(E.vectors(ra)[0], E.vectors(rb)[0]) < 0.99


def test_bad_input_on_llama_server(llama):
    empty_list = post(llama, {"input": []})
    assert empty_list.status_code == 400 and "must not be empty" in empty_list.json()["error"]["message"]
    for bad in (5, None, {"text": "hi"}):
        r = post(llama, {"input": bad})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", (bad, r.text[:200])
    # documented behaviours, not errors: "" embeds the empty sentence ([CLS][SEP]); a list of ints is token ids
    assert post(llama, {"input": ""}).json()["usage"]["prompt_tokens"] == 2
    assert post(llama, {"input": [101, 7592, 102]}).json()["usage"]["prompt_tokens"] == 3
    too_long = post(llama, {"input": "hello " * 10_000})  # 10 000 tokens: refused at once, nothing cut silently
    assert too_long.status_code == 500 and "too large to process" in too_long.json()["error"]["message"]


def test_bad_input_on_ollama(ollama):
    v1_empty = post(ollama, {"input": []})
    assert v1_empty.status_code == 400 and v1_empty.json()["error"]["message"] == "invalid input"
    for bad in (5, [1, 2, 3], {"text": "hi"}):  # no token ids on Ollama's /v1 (llama-server takes them)
        r = post(ollama, {"input": bad})
        assert r.status_code == 400 and r.json()["error"]["message"] == "invalid input type", (bad, r.text[:200])
    native = ollama.base_url + "/api/embed"
    for nothing in ([], ""):  # the native API answers "no vectors" where /v1 refuses [] and embeds ""
        r = httpx.post(native, json={"model": E.NAME, "input": nothing}, timeout=60)
        assert r.status_code == 200 and r.json()["embeddings"] == [], (nothing, r.text[:200])
    assert len(E.vectors(post(ollama, {"input": ""}).json())[0]) == E.DIMENSIONS
    long = "hello " * 10_000
    cut = httpx.post(native, json={"model": E.NAME, "input": long}, timeout=60).json()
    assert cut["prompt_eval_count"] == E.CONTEXT, "Ollama cuts long input to the model's window (truncate: true)"
    assert post(ollama, {"input": long}).json()["usage"]["prompt_tokens"] == E.CONTEXT, "/v1 cuts it silently too"
    refused = httpx.post(native, json={"model": E.NAME, "input": long, "truncate": False}, timeout=60)
    assert refused.status_code == 400 and "exceeds the context length" in refused.json()["error"]


def test_a_chat_model_embeds_too_but_with_its_own_width(llama, ollama):
    """Ollama embeds with any model; a chat model's pooled hidden state is not a sentence embedding (lesson 16
    measures how badly it ranks). llama-server's chat server refuses: it was not started with --embeddings."""
    import labkit
    r = httpx.post(ollama.base_url + "/api/embed", json={"model": "smollm2-135m", "input": "hi"}, timeout=60)
    assert r.status_code == 200 and len(r.json()["embeddings"][0]) not in (0, E.DIMENSIONS)
    chat = labkit.up("llamacpp", export=False, quiet=True)
    refused = httpx.post(chat.openai_base_url + "/embeddings", json={"input": "hi"}, timeout=60)
    assert refused.status_code == 501 and "--embeddings" in refused.json()["error"]["message"]
