"""labkit.gguf: the header reader lesson 19 uses, on the real embedded model and on hand-written headers."""
from __future__ import annotations

import struct

import pytest

from labkit.errors import ModelError
from labkit.gguf import BLOCKS, kv_bytes_per_token, read_gguf
from labkit.models import model_path


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _header(kv: list[tuple[str, int, bytes]], tensors: list[tuple[str, tuple[int, ...], int]],
            offsets: list[int] | None = None) -> bytes:
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for key, type_id, value in kv:
        out += _s(key) + struct.pack("<I", type_id) + value
    for (name, dims, type_id), offset in zip(tensors, offsets or [0] * len(tensors)):
        out += _s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", type_id, offset)
    return out


GQA = [("general.architecture", 8, _s("llama")), ("llama.block_count", 4, struct.pack("<I", 32)),
       ("llama.embedding_length", 4, struct.pack("<I", 4096)), ("llama.attention.head_count", 4, struct.pack("<I", 32)),
       ("llama.attention.head_count_kv", 4, struct.pack("<I", 8)),
       ("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 2) + _s("a") + _s("b"))]


def test_a_handwritten_header_is_read_with_its_arrays_and_tensor_table(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(_header(GQA, [("blk.0.attn_q.weight", (4096, 4096), 12), ("output_norm.weight", (4096,), 0)]))
    g = read_gguf(f)
    assert g.arch == "llama" and g.get("block_count") == 32 and g.metadata["tokenizer.ggml.tokens"] == ["a", "b"]
    assert g.n_params == 4096 * 4096 + 4096 and g.main_type() == "Q4_K"
    assert g.bytes_by_type() == {"Q4_K": (4096 * 4096, 4096 * 4096 // 256 * 144), "F32": (4096, 4096 * 4)}
    assert 4.5 < g.bits_per_weight() < 4.6                       # Q4_K is 4.5 bits a weight, the norm 32
    # Llama-3.1-8B's shape: 32 layers × 8 KV heads × (128 + 128) × 2 bytes = 128 KiB a token
    assert kv_bytes_per_token(g) == 32 * 8 * 256 * 2 == 128 * 1024


def test_key_and_value_lengths_and_per_layer_kv_heads_are_honoured(tmp_path):
    f = tmp_path / "m.gguf"
    kv = [*GQA[:4], ("llama.attention.head_count_kv", 9, struct.pack("<IQ", 4, 2) + struct.pack("<II", 0, 8)),
          ("llama.attention.key_length", 4, struct.pack("<I", 192)), ("llama.attention.value_length", 4, struct.pack("<I", 128))]
    f.write_bytes(_header(kv, []))
    assert kv_bytes_per_token(read_gguf(f)) == 32 * 8 * (192 + 128) * 2


def test_a_type_the_table_lacks_is_sized_from_the_offsets(tmp_path):
    f = tmp_path / "m.gguf"
    header = _header(GQA, [("a", (256, 4), 99), ("b", (32,), 8)], offsets=[0, 96])
    padded = header + b"\0" * (-len(header) % 32)
    f.write_bytes(padded + b"\1" * (96 + 34))              # 96 bytes of the unknown type, then one Q8_0 block
    g = read_gguf(f)
    assert [t.nbytes for t in g.tensors] == [96, 34] and g.tensors[0].type == "type 99"
    assert g.data_bytes == 130 and g.bits_per_weight() == 8 * 130 / (1024 + 32)


@pytest.mark.parametrize("content, why", [(b"", "magic"), (b"GGML" + b"\0" * 20, "magic"),
                                          (b"GGUF" + struct.pack("<I", 9) + b"\0" * 16, "version 9"),
                                          (_header(GQA, [])[:-3], "ends inside")])
def test_what_is_not_a_gguf_gets_a_clear_error(tmp_path, content, why):
    f = tmp_path / "bad.gguf"
    f.write_bytes(content)
    with pytest.raises(ModelError) as e:
        read_gguf(f)
    assert why in str(e.value) and "Fix:" in str(e.value)


def test_the_embedded_model_reads_as_the_server_loads_it():
    g = read_gguf(model_path())
    data = g.data_bytes
    assert all(t.type_id in BLOCKS for t in g.tensors)           # every type of the real file is in the table
    assert all(0 <= t.stored - t.nbytes < 32 for t in g.tensors)  # block layout = offsets, up to the alignment
    assert data < model_path().stat().st_size < data + 4 * 2**20   # tensor data + a header (the tokenizer) of < 4 MB
    assert g.get("block_count") and g.get("context_length") and g.main_type() in {"Q4_1", "Q4_0", "Q8_0", "Q4_K"}
    assert kv_bytes_per_token(g) > 0 and g.n_params > 10**8
