"""The CPU the lab builds for, the compiler flags that make a build run where it is built, and how the builds'
threads wait on it (`llama_cpp_env`).

`-march=native` means "every instruction this CPU advertises". On an Intel Xeon with AMX that includes the AMX
tile instructions: llama.cpp then compiles AMX kernels that died with SIGILL on such a VM, and Ollama's cgo build
asks for an AMX buffer type whose source it does not compile (a link error). So a native build here is native
*minus AMX*; and when even that does not run, a portable build targets only the vector level the CPU reports
(AVX2/FMA/F16C on x86-64, the architecture's baseline elsewhere). Everything here is pure logic on a `Cpu`
value, so a test can hand it a CPU this machine does not have."""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

NO_AMX = ("-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16")
# The x86-64 levels a portable build may use, each as (cpuinfo flag, gcc flag, ggml CMake option).
X86_PORTABLE = (("sse4_2", "-msse4.2", "GGML_SSE42"), ("avx", "-mavx", "GGML_AVX"), ("avx2", "-mavx2", "GGML_AVX2"),
                ("fma", "-mfma", "GGML_FMA"), ("f16c", "-mf16c", "GGML_F16C"), ("bmi2", "-mbmi2", "GGML_BMI2"))
FLAVOURS = ("native", "portable")


@dataclass(frozen=True)
class Cpu:
    """What a build depends on: the architecture, the model name and the instruction-set flags."""

    arch: str
    model: str
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_x86(self) -> bool:
        return self.is_x86_64 or self.arch.lower() in ("i686", "i386")

    @property
    def is_x86_64(self) -> bool:
        return self.arch.lower() in ("x86_64", "amd64")

    @property
    def has_amx(self) -> bool:
        return any(f.startswith("amx") for f in self.flags)

    @property
    def fingerprint(self) -> str:
        """Changes when the CPU changes (a copied labkit home, a resized VM): then binaries are re-smoke-tested."""
        text = "|".join([self.arch, self.model, *sorted(self.flags)])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        vector = [f for f in ("avx2", "avx512f", "amx_tile", "neon", "asimd", "sve") if f in self.flags]
        return f"{self.model} ({self.arch}{', ' + ' '.join(vector) if vector else ''})"

    def to_json(self) -> dict:
        return {"arch": self.arch, "model": self.model, "fingerprint": self.fingerprint,
                "vector": self.describe()}


def parse_cpuinfo(text: str, arch: str) -> Cpu:
    """A `Cpu` from /proc/cpuinfo (x86: `model name` + `flags`; arm64: `CPU part` + `Features`)."""
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return Cpu(arch=arch, model=model or platform.processor() or arch, flags=flags)


def this_cpu() -> Cpu:
    """The CPU this process runs on."""
    arch = platform.machine() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        return parse_cpuinfo(cpuinfo.read_text(errors="replace"), arch)
    if shutil.which("sysctl"):  # macOS
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string", "machdep.cpu.features"],
                             capture_output=True, text=True, timeout=5).stdout.splitlines()
        return Cpu(arch=arch, model=(out[0] if out else arch).strip(),
                   flags=frozenset(" ".join(out[1:]).lower().split()))
    return Cpu(arch=arch, model=platform.processor() or arch)


def compiler_flags(cpu: Cpu, flavour: str) -> list[str]:
    """Flags for C/C++ code compiled for `cpu`: native minus AMX, or the portable vector level."""
    if flavour == "native":
        return ["-march=native", *NO_AMX] if cpu.is_x86 else ["-march=native"]
    if flavour == "portable":
        return [gcc for flag, gcc, _ in X86_PORTABLE if flag in cpu.flags] if cpu.is_x86 else []
    raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")


def llama_cmake_args(cpu: Cpu, flavour: str) -> list[str]:
    """llama.cpp's CMake options for `cpu`. Native: GGML_NATIVE (ggml adds -march=native) with AMX switched off
    in the C/C++ flags; an explicit -mno-* wins over what -march turns on, wherever it stands on the line.
    Portable: GGML_NATIVE=OFF and each x86 level the CPU reports switched on by name; AVX-512 and AMX stay off."""
    if flavour == "native":
        if not cpu.is_x86:
            return ["-DGGML_NATIVE=ON"]
        no_amx = " ".join(NO_AMX)
        return ["-DGGML_NATIVE=ON", f"-DCMAKE_C_FLAGS={no_amx}", f"-DCMAKE_CXX_FLAGS={no_amx}"]
    if flavour == "portable":
        if not cpu.is_x86:
            return ["-DGGML_NATIVE=OFF"]
        return ["-DGGML_NATIVE=OFF", *(f"-D{opt}={'ON' if flag in cpu.flags else 'OFF'}"
                                       for flag, _, opt in X86_PORTABLE),
                "-DGGML_AVX512=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"]
    raise ValueError(f"flavour must be one of {FLAVOURS}, not {flavour!r}")


def compiler_accepts(flags: list[str], compiler: str | None = None) -> bool:
    """Whether the C compiler takes these flags (an old gcc does not know -mno-amx-*; Apple clang on arm64 may
    refuse -march=native): probed by compiling an empty program."""
    cc = compiler or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text("int main(void) { return 0; }\n")
        try:
            r = subprocess.run([cc, *flags, "-c", str(src), "-o", str(Path(tmp) / "probe.o")],
                               capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return r.returncode == 0


def first_flavour(cpu: Cpu, accepts=compiler_accepts) -> str:
    """Native when the compiler takes the native flags for this CPU, else straight to portable."""
    return "native" if accepts(compiler_flags(cpu, "native")) else "portable"


# How many pause instructions a llama.cpp thread spins at a barrier before it sleeps (libgomp's GOMP_SPINCOUNT;
# its default is 300,000). Measured where it is set: see `llama_cpp_env`.
SPINCOUNT_X86 = "3000"


def llama_cpp_env(cpu: Cpu | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for llama.cpp's programs (llama-server, its router's children, RPC workers, llama-bench).

    The lab's llama.cpp is built with OpenMP (GCC's libgomp): at every barrier of a token's graph (hundreds per
    token) a thread that is done spins up to 300,000 pauses for the others before it sleeps. Alone on the machine
    that is the fastest wait. But when a second server computes at the same time on the same cores (llama-server
    beside Ollama in lesson 12's playground, two llama-servers), each spins for a thread the kernel has taken off
    its core to run the other server's spinning threads. Measured on a 2-core Xeon (AVX-512, AMX): 40 tokens from
    each of two llama-servers at once took 93-103 s instead of ~0.5 s alone (~200x); llama-server beside Ollama
    95-103 s. With 3000 spins both pairs took 0.9-2.7 s and a server alone lost nothing (llama-bench tg64 108 vs
    109 tok/s, pp64 341-369 vs 362); 1000 is this Xeon's knee, 300 cost decode speed (72 tok/s), 100 more (39).
    With one core busy with another program, `--threads 2` decoded 20 tok/s with the default spin and 25-37 with
    3000 (`--threads 1`: 59), lesson 13. `--poll 0` does not help (it is the wait for work, not the barrier);
    `--threads 1` does, at half the speed alone. Only x86-64 was measured (a pause costs ~40-140 cycles there, so
    3000 leaves a margin on CPUs with a cheaper pause); elsewhere libgomp's default stays, as does a
    GOMP_SPINCOUNT or OMP_WAIT_POLICY of your own. A llama.cpp built without libgomp (clang's libomp, no OpenMP)
    ignores the variable, as does Ollama (its ggml has no OpenMP; on the 2-core Xeon it ran one model at a time, so
    two of its models never decoded at once: asked together, the second waited for the swap, 1.5-1.9 s in all)."""
    environ = dict(os.environ if environ is None else environ)
    if (cpu or this_cpu()).is_x86_64 and not ({"GOMP_SPINCOUNT", "OMP_WAIT_POLICY"} & environ.keys()):
        environ["GOMP_SPINCOUNT"] = SPINCOUNT_X86
    return environ
