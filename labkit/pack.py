"""The workshop pack: a labkit home's runnable parts built once, carried to every laptop.

`labkit pack` writes one tar archive: the llama.cpp programs, Ollama, the web UI, both models and newman, with a
manifest (format, versions, the size and sha256 of every file, the CPU and flags of each build). `labkit unpack`
(or `make lab PACK=…`) checks the manifest against every file in a staging folder, moves the parts the home lacks
into place, then hands them to `labkit setup`, whose rule is unchanged: a binary counts only once it has run on
this CPU (smoke-tested again here), and only a binary that dies here is rebuilt. No compiler, cmake, Go or Node
on that path. A corrupt, truncated or foreign pack stops with a clear message and leaves the home as it was.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import tarfile
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from tqdm import tqdm

from .cpu import this_cpu
from .embeddings import gguf_path
from .errors import LabkitError
from .home import home, subdir
from .language import text
from .models import cached_path
from .servers.install import (LLAMA_CPP_VERSION, OLLAMA_VERSION, build_llama_cpp_flavour, build_ollama_flavour,
                              llama_cpp_prefix, ollama_prefix, prepare_llama_cpp, prepare_ollama, read_stamp)
from .servers.smoke import build_until_it_runs, smoke_llama_cpp, smoke_ollama
from .servers.ui import ui_built

FORMAT = 1
MANIFEST = "labkit-pack.json"
STEP_OF_PART = {"llama.cpp": "llama-server"}  # the `labkit setup` step of each part, where the names differ


class PackError(LabkitError):
    """A pack that cannot be used here: corrupt, truncated, for another architecture, or incomplete."""


def parts() -> dict[str, list[Path]]:
    """What a pack carries, by part: paths in the labkit home (files, or folders taken whole)."""
    model = cached_path()
    embedding = gguf_path()
    return {
        "llama.cpp": [llama_cpp_prefix()],
        "ollama": [ollama_prefix()],
        "web-ui": [home() / "ui" / LLAMA_CPP_VERSION],
        "model": [model],
        "embedding-model": [embedding, embedding.with_suffix(".json")],
        "newman": [home() / "node"],
    }


def portable_builds(*, quiet: bool = False) -> dict[str, Path]:
    """llama.cpp and Ollama built for the portable level (the builder's x86 levels up to AVX2/FMA/F16C/BMI2, no
    AVX-512 or AMX: x86-64-v3 on any builder of the last decade) instead of -march=native, smoke-tested here,
    kept beside the home's own builds. Returns {part: prefix} to pack in place of the native ones."""
    cpu = this_cpu()
    out = {}
    for part, home_prefix, prepare, build, smoke in (
            ("llama.cpp", llama_cpp_prefix(), prepare_llama_cpp, build_llama_cpp_flavour, smoke_llama_cpp),
            ("ollama", ollama_prefix(), prepare_ollama, build_ollama_flavour, smoke_ollama)):
        prefix = subdir("pack-builds", home_prefix.parent.name) / home_prefix.name
        stamp = read_stamp(prefix)
        if not (stamp and stamp.get("flavour") == "portable"):
            prepare()
            build_until_it_runs(part, prefix, cpu=cpu, first="portable", smoke=smoke,
                                build=lambda flavour, dest, build=build: build(flavour, dest, quiet=quiet))
        out[part] = prefix
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def files_of(path: Path) -> list[Path]:
    """The files and symlinks under `path` (npm's `.bin/newman` is a relative symlink: it must travel too)."""
    return sorted(p for p in path.rglob("*") if p.is_symlink() or p.is_file()) if path.is_dir() else [path]


def missing_parts() -> list[str]:
    """Parts the home cannot pack yet (run `labkit setup` first)."""
    found = {"llama.cpp": read_stamp(llama_cpp_prefix()), "ollama": read_stamp(ollama_prefix()),
             "web-ui": ui_built()}
    out = [name for name, ok in found.items() if not ok]
    return out + [name for name, paths in parts().items() if name not in found and not all(p.exists() for p in paths)]


def manifest(files: dict[str, list[tuple[Path, str]]], builds: dict[str, dict]) -> dict:
    """Versions, every file's size and sha256 (by its place in the home), and how each build was made."""
    entries = {}
    for part, pairs in files.items():
        for src, name in pairs:
            entries[name] = ({"part": part, "link": os.readlink(src)} if src.is_symlink() else
                             {"part": part, "size": src.stat().st_size, "sha256": sha256_file(src)})
    return {"format": FORMAT, "labkit": version("labkit"), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "arch": platform.machine(), "llama.cpp": LLAMA_CPP_VERSION, "ollama": OLLAMA_VERSION,
            "packed_on": this_cpu().to_json(), "builds": builds, "files": entries}


def pack(out: Path, *, portable: bool = False) -> Path:
    """Write the pack (an uncompressed tar: the models and binaries barely compress) and return its path. With
    `portable`, the builds in it are the portable ones (built once, then reused), not the home's native ones."""
    lacking = missing_parts()
    if lacking:
        raise PackError(text(f"This labkit home cannot be packed yet: {', '.join(lacking)} missing.",
                             f"这个 labkit 主目录还不能打包：缺少 {', '.join(lacking)}。"),
                        fix=text("Run `labkit setup` first (it builds and smoke-tests everything).",
                                 "先运行 `labkit setup`（它会编译所有程序并做冒烟测试）。"))
    root = home()
    sources = {part: [(p, p) for p in paths] for part, paths in parts().items()}
    if portable:  # the same places in the home, filled from the portable builds
        for part, prefix in portable_builds().items():
            sources[part] = [(prefix, parts()[part][0])]
    files = {part: [(f, str(place / f.relative_to(src)) if src.is_dir() else str(place))
                    for src, place in pairs for f in files_of(src)] for part, pairs in sources.items()}
    files = {part: [(f, str(Path(name).relative_to(root))) for f, name in pairs] for part, pairs in files.items()}
    builds = {part: {k: stamp.get(k) for k in ("flavour", "flags", "built_on", "version")}
              for part, stamp in ((part, read_stamp(pairs[0][0])) for part, pairs in sources.items()
                                  if part in ("llama.cpp", "ollama")) if stamp}
    record = manifest(files, builds)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"labkit-pack-{LLAMA_CPP_VERSION}-{platform.machine()}.tar"
    partial = target.with_suffix(".tar.partial")
    total = sum(e.get("size", 0) for e in record["files"].values())
    with tarfile.open(partial, "w") as tar, tqdm(total=total, unit="B", unit_scale=True, desc="pack") as bar:
        data = json.dumps(record, indent=1).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, fileobj=io.BytesIO(data))
        for pairs in files.values():
            for src, name in pairs:
                tar.add(src, arcname=name, recursive=False)
                bar.update(record["files"][name].get("size", 0))
    partial.replace(target)
    return target


def read_manifest(archive: Path) -> dict:
    """The pack's manifest, checked for format and architecture before anything is unpacked."""
    try:
        with tarfile.open(archive, "r:") as tar:
            member = tar.next()
            if member is None or member.name != MANIFEST:
                raise PackError(text(f"{archive} is not a labkit pack (no {MANIFEST} first).",
                                     f"{archive} 不是 labkit 的打包文件（开头没有 {MANIFEST}）。"))
            record = json.loads(tar.extractfile(member).read())
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise PackError(text(f"{archive} cannot be read as a pack ({exc}).", f"无法读取打包文件 {archive}（{exc}）。"),
                        fix=text("Copy the pack again (it may be truncated) and retry.",
                                 "重新拷贝打包文件（可能不完整）后再试。")) from None
    if record.get("format") != FORMAT:
        raise PackError(f"{archive}: pack format {record.get('format')}, this labkit reads format {FORMAT}.",
                        fix="Make the pack with the same version of the course.")
    if record.get("arch") != platform.machine():
        raise PackError(text(f"{archive} was built for {record.get('arch')}, this machine is {platform.machine()}.",
                             f"{archive} 是为 {record.get('arch')} 编译的，本机是 {platform.machine()}。"),
                        fix=text("Use a pack made on this architecture, or build here: `make lab` without PACK.",
                                 "换用同一架构上制作的打包文件，或在本机编译：不带 PACK 运行 `make lab`。"))
    return record


def unpack(archive: Path) -> list[str]:
    """Verify the whole pack in a staging folder, then move in the parts the home lacks; returns their names.
    Nothing in the home changes unless every file of the pack is intact."""
    archive = Path(archive).expanduser()
    record = read_manifest(archive)
    if not missing_parts():
        return []  # everything is here already (a second `make lab PACK=…`): nothing to verify or move
    root = home()
    staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=subdir("tmp")))
    try:
        try:
            with tarfile.open(archive, "r:") as tar:
                tar.extractall(staging, filter="data")  # refuses absolute paths, '..', devices and links out
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise PackError(text(f"{archive} is truncated or damaged ({exc}).", f"{archive} 不完整或已损坏（{exc}）。"),
                            fix=text("Copy the pack again and retry.", "重新拷贝打包文件后再试。")) from None
        bad = [name for name, entry in record["files"].items() if not _intact(staging / name, entry)]
        if bad:
            raise PackError(text(f"{archive}: {len(bad)} file(s) differ from the manifest: {', '.join(bad[:5])}.",
                                 f"{archive}：{len(bad)} 个文件与清单不符：{', '.join(bad[:5])}。"),
                            fix=text("Copy the pack again (or ask for a new one); the labkit home was not changed.",
                                     "重新拷贝打包文件（或重新制作）；labkit 主目录没有任何改动。"))
        moved = []
        for part, paths in parts().items():
            if all(p.exists() for p in paths) and part not in missing_parts():
                continue  # the home has it already: keep it
            for path in paths:
                src = staging / path.relative_to(root)
                if src.exists():
                    if path.is_dir():
                        shutil.rmtree(path)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, path)
            moved.append(part)
        return moved
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _intact(path: Path, entry: dict) -> bool:
    if "link" in entry:
        return path.is_symlink() and os.readlink(path) == entry["link"]
    return path.is_file() and path.stat().st_size == entry["size"] and sha256_file(path) == entry["sha256"]
