"""The workshop pack on a home of small stand-in files (no build): what is packed, the manifest, a clean unpack
into an empty home, and the packs that must be refused — corrupt, truncated, another architecture, not a pack —
each leaving the home as it was."""
from __future__ import annotations

import json
import platform
import tarfile

import pytest

import labkit.pack as packmod
from labkit.pack import MANIFEST, PackError, pack, parts, read_manifest, unpack
from labkit.servers.install import STAMP, llama_cpp_prefix, ollama_prefix


def fake_home(root):
    """Every part a pack carries, as small files with the stamps a real setup writes."""
    stamp = {"flavour": "native", "flags": ["-DGGML_NATIVE=ON"], "version": "x",
             "built_on": {"arch": platform.machine(), "model": "Test CPU", "fingerprint": "0" * 16},
             "smoke": {"cpu": {"fingerprint": "0" * 16}}}
    for prefix, program in ((llama_cpp_prefix(), "llama-server"), (ollama_prefix(), "ollama")):
        (prefix / "bin").mkdir(parents=True, exist_ok=True)
        (prefix / "bin" / program).write_bytes(b"#!/bin/sh\necho " + program.encode() + b"\n")
        (prefix / "bin" / program).chmod(0o755)
        (prefix / STAMP).write_text(json.dumps(stamp))
    for part in ("model", "embedding-model"):
        for path in parts()[part]:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{part}:{path.name}".encode() * 100)
    newman = parts()["newman"][0] / "node_modules" / "newman" / "bin" / "newman.js"
    newman.parent.mkdir(parents=True)
    newman.write_text("#!/usr/bin/env node\n")
    (parts()["newman"][0] / "node_modules" / ".bin").mkdir()
    (parts()["newman"][0] / "node_modules" / ".bin" / "newman").symlink_to("../newman/bin/newman.js")  # as npm does
    ui = parts()["web-ui"][0]
    ui.mkdir(parents=True)
    (ui / "index.html").write_text("<html>the UI</html>")
    (ui / "labkit-ui.json").write_text(json.dumps({"node": "v20", "seconds": 1}))


@pytest.fixture
def packed(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "instructor"))
    fake_home(tmp_path / "instructor")
    archive = pack(tmp_path / "out")
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "laptop"))  # from here on: a learner's empty home
    return archive


def home_files(root):
    found = (p.relative_to(root) for p in root.rglob("*") if p.is_file())
    return sorted(str(p) for p in found if p.parts[0] != "tmp")


def test_a_pack_carries_every_part_with_a_manifest(packed, tmp_path):
    record = read_manifest(packed)
    assert record["arch"] == platform.machine() and record["format"] == 1
    assert {e["part"] for e in record["files"].values()} == set(parts())
    assert record["builds"]["llama.cpp"]["flavour"] == "native", "how each build was made travels with it"
    assert all(len(e["sha256"]) == 64 and e["size"] > 0 for e in record["files"].values() if "link" not in e)
    assert record["files"]["node/node_modules/.bin/newman"] == {"part": "newman", "link": "../newman/bin/newman.js"}
    assert sorted(record["files"]) == home_files(tmp_path / "instructor")


def test_unpack_into_an_empty_home_then_nothing_to_do(packed, tmp_path):
    assert set(unpack(packed)) == set(parts())
    assert home_files(tmp_path / "laptop") == home_files(tmp_path / "instructor")
    assert (llama_cpp_prefix() / "bin" / "llama-server").stat().st_mode & 0o100, "programs stay executable"
    newman = tmp_path / "laptop" / "node" / "node_modules" / ".bin" / "newman"
    assert newman.is_symlink() and newman.read_text().startswith("#!/usr/bin/env node"), "npm's link still leads"
    assert unpack(packed) == [], "a second unpack finds every part in place"


def test_a_corrupt_pack_is_refused_and_changes_nothing(packed, tmp_path):
    data = bytearray(packed.read_bytes())
    at = data.index(b"model:")  # inside a model file's bytes
    data[at] ^= 0xFF
    packed.write_bytes(bytes(data))
    with pytest.raises(PackError, match="differ from the manifest") as err:
        unpack(packed)
    assert "not changed" in err.value.fix
    assert home_files(tmp_path / "laptop") == []
    assert not list((tmp_path / "laptop" / "tmp").glob("unpack-*")), "the staging folder is gone too"


def test_a_truncated_pack_is_refused_and_changes_nothing(packed, tmp_path):
    packed.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    with pytest.raises(PackError, match="truncated or damaged|differ from the manifest"):
        unpack(packed)
    assert home_files(tmp_path / "laptop") == []


def test_a_pack_for_another_architecture_is_refused_before_unpacking(packed, tmp_path, monkeypatch):
    other = "aarch64" if platform.machine() != "aarch64" else "x86_64"
    monkeypatch.setattr(packmod.platform, "machine", lambda: other)
    with pytest.raises(PackError, match=f"built for {platform.uname().machine}, this machine is {other}"):
        unpack(packed)
    assert home_files(tmp_path / "laptop") == []


def test_a_tar_that_is_not_a_pack(tmp_path):
    other = tmp_path / "other.tar"
    (tmp_path / "x.txt").write_text("x")
    with tarfile.open(other, "w") as tar:
        tar.add(tmp_path / "x.txt", arcname="x.txt")
    with pytest.raises(PackError, match=f"not a labkit pack \\(no {MANIFEST} first\\)"):
        read_manifest(other)


def test_an_incomplete_home_cannot_be_packed(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    with pytest.raises(PackError, match="cannot be packed yet: llama.cpp, ollama, web-ui"):
        pack(tmp_path / "out")


def test_a_portable_pack_carries_the_portable_builds_in_the_homes_places(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "instructor"))
    fake_home(tmp_path / "instructor")
    builds = {}
    for part, program in (("llama.cpp", "llama-server"), ("ollama", "ollama")):
        prefix = tmp_path / "portable" / part
        (prefix / "bin").mkdir(parents=True)
        (prefix / "bin" / program).write_text("portable build\n")
        (prefix / STAMP).write_text(json.dumps({"flavour": "portable", "flags": ["-DGGML_AVX2=ON"]}))
        builds[part] = prefix
    monkeypatch.setattr(packmod, "portable_builds", lambda: builds)
    record = read_manifest(pack(tmp_path / "out", portable=True))
    assert record["builds"]["llama.cpp"] == {"flavour": "portable", "flags": ["-DGGML_AVX2=ON"], "built_on": None,
                                             "version": None}
    place = str((llama_cpp_prefix() / "bin" / "llama-server").relative_to(tmp_path / "instructor"))
    assert record["files"][place]["size"] == len("portable build\n"), "packed where the home keeps llama-server"
