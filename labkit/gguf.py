"""What a GGUF file says about itself: its metadata and its tensor table, read from the header only.

Lesson 19 uses it to see what a "Q4_1" file really holds (which tensors are 4-bit, which are not, how many bits a
weight costs) and to compute the KV cache's cost per token from the model's own shape. Only the header is read: a
few MB even for a 70B file. Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""
from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .errors import ModelError

__all__ = ["BLOCKS", "Gguf", "Tensor", "kv_bytes_per_token", "read_gguf"]

# ggml type id → (name, weights per block, bytes per block): the layouts of ggml-common.h. A Q4_1 block holds 32
# weights in 20 bytes (16 bytes of 4-bit values + a 2-byte scale + a 2-byte minimum): 5.0 bits per weight, not 4.
BLOCKS: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 20: ("IQ4_NL", 32, 18), 23: ("IQ4_XS", 256, 136),
    30: ("BF16", 1, 2),
}
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    type_id: int
    stored: int | None = None   # bytes between this tensor's offset and the next one's (padding included)

    @property
    def type(self) -> str:
        return BLOCKS.get(self.type_id, (f"type {self.type_id}", 0, 0))[0]

    @property
    def weights(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """Bytes of this tensor's data: from the block layout, or from the offsets for a type the table lacks."""
        if self.type_id not in BLOCKS:
            return self.stored or 0
        _, per_block, block_bytes = BLOCKS[self.type_id]
        return self.weights // per_block * block_bytes


@dataclass
class Gguf:
    path: Path
    version: int
    metadata: dict[str, object]
    tensors: list[Tensor] = field(default_factory=list)

    @property
    def arch(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def get(self, key: str, default: object = None) -> object:
        """A metadata value by its name under the architecture (`block_count` → `llama.block_count`)."""
        return self.metadata.get(f"{self.arch}.{key}", self.metadata.get(key, default))

    @property
    def n_params(self) -> int:
        return sum(t.weights for t in self.tensors)

    def bytes_by_type(self) -> dict[str, tuple[int, int]]:
        """type → (weights, bytes): how the file's weights are stored."""
        out: dict[str, list[int]] = {}
        for t in self.tensors:
            w_b = out.setdefault(t.type, [0, 0])
            w_b[0] += t.weights
            w_b[1] += t.nbytes
        return {k: (w, b) for k, (w, b) in sorted(out.items(), key=lambda kv: -kv[1][1])}

    @property
    def data_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def bits_per_weight(self) -> float:
        return 8 * self.data_bytes / max(1, self.n_params)

    def main_type(self) -> str:
        """The type that holds most weights: what the file's name says (Q4_1, Q8_0, …)."""
        count: Counter[str] = Counter()
        for t in self.tensors:
            count[t.type] += t.weights
        return count.most_common(1)[0][0] if count else "?"


def kv_bytes_per_token(g: Gguf, *, bytes_per_value: int = 2) -> int:
    """Bytes the KV cache keeps per token of context: layers × KV heads × (key + value length) × f16.

    Grouped-query attention shows here: the KV heads, not the query heads, count. Sliding-window and hybrid
    models (Gemma 2/3, Qwen 3.5's linear layers) keep less than this; the lesson says so where it matters."""
    layers = int(g.get("block_count"))
    heads = int(g.get("attention.head_count"))
    kv_heads = g.get("attention.head_count_kv", heads)
    kv_heads = max(kv_heads) if isinstance(kv_heads, list) else int(kv_heads)   # per-layer lists exist
    head = int(g.get("embedding_length")) // heads
    k_len = int(g.get("attention.key_length", head))
    v_len = int(g.get("attention.value_length", head))
    return layers * kv_heads * (k_len + v_len) * bytes_per_value


def _read(f: BinaryIO, fmt: str):
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise EOFError("the file ends inside its header")
    return struct.unpack(fmt, data)[0]


def _string(f: BinaryIO) -> str:
    n = _read(f, "<Q")
    if n > 1 << 24:
        raise ValueError(f"a {n}-byte string in the header")
    data = f.read(n)
    if len(data) != n:
        raise EOFError("the file ends inside its header")
    return data.decode("utf-8", errors="replace")


def _value(f: BinaryIO, type_id: int):
    if type_id in _SCALARS:
        return _read(f, _SCALARS[type_id])
    if type_id == _STRING:
        return _string(f)
    if type_id == _ARRAY:
        item_type, n = _read(f, "<I"), _read(f, "<Q")
        return [_value(f, item_type) for _ in range(n)]
    raise ValueError(f"unknown metadata type {type_id}")


def read_gguf(path: str | os.PathLike) -> Gguf:
    """Parse a GGUF header (v2/v3): metadata and tensor table. Raises ModelError for a file that is not one."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise ValueError("it does not start with the GGUF magic bytes")
            version = _read(f, "<I")
            if version not in (2, 3):
                raise ValueError(f"GGUF version {version} (this reader knows 2 and 3)")
            n_tensors, n_kv = _read(f, "<Q"), _read(f, "<Q")
            metadata = {}
            for _ in range(n_kv):
                key = _string(f)
                metadata[key] = _value(f, _read(f, "<I"))
            table = []
            for _ in range(n_tensors):
                name = _string(f)
                dims = tuple(_read(f, "<Q") for _ in range(_read(f, "<I")))
                table.append((name, dims, _read(f, "<I"), _read(f, "<Q")))   # ..., type, offset into the data
            align = int(metadata.get("general.alignment", 32))
            data_start = -(-f.tell() // align) * align
            ends = sorted({off for *_, off in table} | {path.stat().st_size - data_start})
            following = dict(zip(ends, ends[1:]))   # a tensor's data runs to the next one's offset (or the file's end)
            tensors = [Tensor(name, dims, type_id, following.get(off, off) - off) for name, dims, type_id, off in table]
    except (OSError, EOFError, ValueError, struct.error) as e:
        raise ModelError(f"{path} is not a readable GGUF file: {e}",
                         fix="Check the path, or download the file again (a GGUF starts with the bytes 'GGUF').") from e
    return Gguf(path, version, metadata, tensors)
