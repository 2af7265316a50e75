"""Builds that run where they are built: the CPU flags for machines CI never sees (AMX, arm64), the fallback
from a binary that dies with SIGILL to a portable rebuild, the stamp that decides re-smoke vs rebuild, and the
lock that makes a lesson wait for a build already running. Fake binaries stand in for the CPU we don't have."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from labkit import cpu as cpumod
from labkit import scale
from labkit.cpu import (NO_AMX, SPINCOUNT_X86, Cpu, compiler_flags, first_flavour, llama_cmake_args, llama_cpp_env,
                        parse_cpuinfo)
from labkit.errors import BinaryError
from labkit.home import data_dir
from labkit.servers import install, smoke
from labkit.servers.install import STAMP, read_stamp, runs_here
from labkit.servers.smoke import Smoke, build_until_it_runs, ensure_runs_here, signal_in, signal_of, smoke_llama_cpp

CPUS = data_dir() / "cpu"
XEON = parse_cpuinfo((CPUS / "xeon_avx512_no_amx.cpuinfo").read_text(), "x86_64")
XEON_AMX = parse_cpuinfo((CPUS / "xeon_with_amx.cpuinfo").read_text(), "x86_64")
ARM = Cpu(arch="aarch64", model="Neoverse-N1", flags=frozenset({"fp", "asimd", "crc32"}))


# ------------------------------------------------------------------------------------------- flags (pure)
def test_cpuinfo_is_read_into_model_and_flags():
    assert XEON.model == "Intel(R) Xeon(R) Processor @ 2.50GHz"
    assert {"avx2", "fma", "f16c", "avx512f"} <= XEON.flags and not XEON.has_amx
    assert XEON_AMX.has_amx and XEON_AMX.fingerprint != XEON.fingerprint


def test_llama_cpp_threads_spin_briefly_on_x86_64_only_and_your_own_setting_wins(monkeypatch):
    """Measured on x86-64 only (see llama_cpp_env): there the barrier spin is cut; on ARM and 32-bit x86 libgomp's
    default stays; a GOMP_SPINCOUNT or OMP_WAIT_POLICY you set is never overridden; the rest of the environment is
    passed on, by default this process's own."""
    base = {"PATH": "/usr/bin", "LANG": "zh_CN.UTF-8"}
    for cpu in (XEON, XEON_AMX):
        assert llama_cpp_env(cpu, base) == {**base, "GOMP_SPINCOUNT": SPINCOUNT_X86}
    for other in (ARM, Cpu(arch="i686", model="Pentium 4", flags=frozenset({"sse2"}))):
        assert llama_cpp_env(other, base) == base
    for own in ({"GOMP_SPINCOUNT": "300000"}, {"OMP_WAIT_POLICY": "passive"}):
        assert llama_cpp_env(XEON, {**base, **own}) == {**base, **own}
    assert base == {"PATH": "/usr/bin", "LANG": "zh_CN.UTF-8"}  # the caller's mapping is not changed
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("LABKIT_PROBE", "kept")
    inherited = llama_cpp_env(XEON)
    assert inherited["LABKIT_PROBE"] == "kept" and inherited["GOMP_SPINCOUNT"] == SPINCOUNT_X86
    assert "GOMP_SPINCOUNT" not in os.environ  # this process's environment is not changed either


def test_native_on_x86_is_native_minus_amx_and_arm_gets_no_x86_flags():
    for cpu in (XEON, XEON_AMX):
        assert compiler_flags(cpu, "native") == ["-march=native", *NO_AMX]
        args = llama_cmake_args(cpu, "native")
        assert "-DGGML_NATIVE=ON" in args and any(a.startswith("-DCMAKE_C_FLAGS=") and "-mno-amx-tile" in a
                                                 for a in args)
    assert compiler_flags(ARM, "native") == ["-march=native"]
    assert not any("amx" in a or "avx" in a.lower() for a in llama_cmake_args(ARM, "native") +
                   llama_cmake_args(ARM, "portable") + compiler_flags(ARM, "portable"))


def test_portable_uses_only_the_levels_the_cpu_reports():
    assert compiler_flags(XEON, "portable") == ["-msse4.2", "-mavx", "-mavx2", "-mfma", "-mf16c", "-mbmi2"]
    old = Cpu("x86_64", "Old Xeon", frozenset({"sse4_2", "avx"}))  # no AVX2: a portable build must not use it
    assert compiler_flags(old, "portable") == ["-msse4.2", "-mavx"]
    args = llama_cmake_args(old, "portable")
    assert "-DGGML_NATIVE=OFF" in args and "-DGGML_AVX2=OFF" in args and "-DGGML_AVX=ON" in args
    assert "-DGGML_AVX512=OFF" in args and "-DGGML_AMX_INT8=OFF" in args
    with pytest.raises(ValueError):
        compiler_flags(XEON, "fastest")


def test_a_compiler_that_refuses_the_native_flags_goes_straight_to_portable():
    assert first_flavour(XEON, accepts=lambda flags: True) == "native"
    assert first_flavour(XEON, accepts=lambda flags: "-mno-amx-tile" not in flags) == "portable"


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc")
def test_no_amx_flags_beat_an_amx_march_in_the_real_compiler():
    """What -march=native means on an AMX Xeon, faked with -march=sapphirerapids: AMX is on unless our flags
    switch it off, wherever they stand on the command line (ggml puts -march=native after CMAKE_C_FLAGS)."""
    def amx_defines(*flags: str) -> list[str]:
        out = subprocess.run(["gcc", *flags, "-dM", "-E", "-"], input="", capture_output=True, text=True)
        if out.returncode != 0:
            pytest.skip(f"this gcc does not know {flags}: {out.stderr[:200]}")
        return [ln for ln in out.stdout.splitlines() if "__AMX" in ln]

    assert amx_defines("-march=sapphirerapids"), "the fake AMX CPU must enable AMX, or this test proves nothing"
    assert amx_defines("-march=sapphirerapids", *NO_AMX) == []
    assert amx_defines(*NO_AMX, "-march=sapphirerapids") == []
    assert cpumod.compiler_accepts(compiler_flags(cpumod.this_cpu(), "native"))


def test_signals_are_named_from_exit_codes_and_from_go_error_text():
    assert signal_of(-signal.SIGILL) == "SIGILL" and signal_of(0) is None and signal_of(1) is None
    body = '{"error":"llama runner process has terminated: signal: illegal instruction (core dumped)"}'
    assert signal_in(body) == "SIGILL"
    assert signal_in("runner: signal: segmentation fault") == "SIGSEGV"
    assert signal_in("model not found") is None


# ------------------------------------------------------------------------------------------- fake binaries
def fake_binary(path: Path, behaviour: str) -> Path:
    """A program that behaves like a build on some CPU: `sigill` kills itself as an AMX kernel would."""
    body = {"sigill": "kill -ILL $$", "ok": "exit 0", "fail": "echo 'model load failed' >&2; exit 1",
            "oom": "kill -KILL $$"}[behaviour]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def run_fake(prefix: Path) -> Smoke:
    """The smoke rule on a fake: run it; a death by signal is reported as that signal."""
    p = subprocess.run([str(prefix / "bin" / "tool")], capture_output=True, text=True, timeout=10)
    if p.returncode == 0:
        return Smoke(ok=True, passed=["tool ran"])
    return Smoke(ok=False, error=f"exit {p.returncode}", signal=signal_of(p.returncode), log_tail=p.stderr)


def fake_build(behaviours: dict[str, str], calls: list[str]):
    def build(flavour: str, dest: Path) -> dict:
        calls.append(flavour)
        if behaviours[flavour] == "nobuild":
            raise BinaryError(f"undefined reference to `ggml_backend_amx_buffer_type' ({flavour})",
                              log_tail="ld: ggml-cpu.cpp: undefined reference")
        fake_binary(dest / "bin" / "tool", behaviours[flavour])
        return {"flags": [f"--{flavour}"], "version": "test"}
    return build


def test_sigill_in_the_native_build_rebuilds_portable_once_and_says_so(tmp_path):
    calls, said = [], []
    prefix = tmp_path / "tool" / "1.0"
    record = build_until_it_runs("tool", prefix, build=fake_build({"native": "sigill", "portable": "ok"}, calls),
                                 smoke=run_fake, cpu=XEON_AMX, first="native", say=said.append)
    assert calls == ["native", "portable"] and record["flavour"] == "portable"
    assert len(said) == 1 and "SIGILL" in said[0] and "portable" in said[0]
    assert read_stamp(prefix)["smoke"]["passed"] == ["tool ran"] and runs_here(read_stamp(prefix), XEON_AMX)
    assert read_stamp(prefix)["built_on"]["fingerprint"] == XEON_AMX.fingerprint
    assert not prefix.with_name("1.0.partial").exists()


def test_a_native_build_that_runs_is_kept_without_a_second_build(tmp_path):
    calls = []
    record = build_until_it_runs("tool", tmp_path / "p", build=fake_build({"native": "ok", "portable": "ok"}, calls),
                                 smoke=run_fake, cpu=XEON, first="native", say=lambda _: None)
    assert calls == ["native"] and record["flavour"] == "native" and record["flags"] == ["--native"]


def test_a_native_build_that_does_not_link_falls_back_to_portable(tmp_path):
    calls, said = [], []
    record = build_until_it_runs("ollama", tmp_path / "p", smoke=run_fake, cpu=XEON_AMX, first="native",
                                 build=fake_build({"native": "nobuild", "portable": "ok"}, calls), say=said.append)
    assert calls == ["native", "portable"] and record["flavour"] == "portable" and "build failed" in said[0]


def test_when_every_build_dies_the_error_names_signal_flags_and_log_and_nothing_is_installed(tmp_path):
    prefix = tmp_path / "p"
    with pytest.raises(BinaryError) as err:
        build_until_it_runs("tool", prefix, build=fake_build({"native": "sigill", "portable": "sigill"}, []),
                            smoke=run_fake, cpu=XEON_AMX, first="native", say=lambda _: None)
    text = str(err.value)
    assert "SIGILL" in text and "--native" in text and "--portable" in text and XEON_AMX.model in text
    assert not prefix.exists() and not prefix.with_name("p.partial").exists()


def test_a_failure_that_is_not_a_signal_is_not_rebuilt(tmp_path):
    calls = []
    with pytest.raises(BinaryError, match="model load failed"):
        build_until_it_runs("tool", tmp_path / "p", build=fake_build({"native": "fail", "portable": "ok"}, calls),
                            smoke=run_fake, cpu=XEON, first="native", say=lambda _: None)
    assert calls == ["native"]


def test_a_kill_by_the_oom_killer_is_not_taken_for_a_cpu_problem(tmp_path):
    calls = []
    with pytest.raises(BinaryError, match="SIGKILL"):
        build_until_it_runs("tool", tmp_path / "p", build=fake_build({"native": "oom", "portable": "ok"}, calls),
                            smoke=run_fake, cpu=XEON, first="native", say=lambda _: None)
    assert calls == ["native"], "SIGKILL (out of memory) → no portable rebuild"


def test_another_cpu_means_a_new_smoke_test_not_a_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    prefix = tmp_path / "p"
    build_until_it_runs("tool", prefix, build=fake_build({"native": "ok", "portable": "ok"}, []), smoke=run_fake,
                        cpu=XEON, first="native", say=lambda _: None)
    calls, said = [], []
    stamp = ensure_runs_here("tool", prefix, build=fake_build({"native": "ok", "portable": "ok"}, calls),
                             smoke=run_fake, cpu=XEON_AMX, say=said.append)
    assert calls == [] and runs_here(stamp, XEON_AMX) and stamp["built_on"]["fingerprint"] == XEON.fingerprint
    assert "smoke-testing it again" in said[0]
    assert ensure_runs_here("tool", prefix, build=fake_build({}, calls), smoke=None, cpu=XEON_AMX) == stamp  # type: ignore[arg-type]


def test_another_cpu_that_kills_the_binary_gets_a_rebuild(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(smoke, "first_flavour", lambda cpu: "native")
    prefix = tmp_path / "p"
    build_until_it_runs("tool", prefix, build=fake_build({"native": "sigill", "portable": "ok"}, []),
                        smoke=lambda p: Smoke(ok=True, passed=["ran on the old CPU"]), cpu=XEON, first="native",
                        say=lambda _: None)
    calls, said = [], []
    stamp = ensure_runs_here("tool", prefix, build=fake_build({"native": "sigill", "portable": "ok"}, calls),
                             smoke=run_fake, cpu=XEON_AMX, say=said.append)
    assert calls == ["native", "portable"] and stamp["flavour"] == "portable" and runs_here(stamp, XEON_AMX)
    assert "smoke-testing it again" in said[0] and "dies with SIGILL here" in said[1]


def test_the_real_llama_smoke_test_reports_sigill_from_a_dying_llama_bench(tmp_path):
    for name in install.LLAMA_CPP_TARGETS:
        fake_binary(tmp_path / "bin" / name, "sigill")
    result = smoke_llama_cpp(tmp_path, timeout=20)
    assert not result.ok and result.signal == "SIGILL" and "llama-bench" in result.error


def test_the_smoke_test_starts_llama_server_as_lessons_do_and_names_its_sigill(tmp_path):
    """llama-bench runs, but llama-server dies at start: the error comes from start_llama_server (the start the
    lessons use), and its 'exit code -4' is read as SIGILL, so the rule rebuilds for this CPU."""
    for name in install.LLAMA_CPP_TARGETS:
        fake_binary(tmp_path / "bin" / name, "sigill")
    (tmp_path / "bin" / "llama-bench").write_text("#!/bin/sh\necho '[{\"avg_ts\": 50.0}]'\n")
    result = smoke_llama_cpp(tmp_path, timeout=20)
    assert not result.ok and result.signal == "SIGILL", result
    assert "exited during start" in result.error and "llama-server" in result.error
    assert signal_in("llama-server exited during start (exit code -4).") == "SIGILL"
    assert signal_in("exited (exit code 1)") is None


def test_a_lab_build_counts_only_with_a_stamp_from_this_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    for var in ("LLAMA_SERVER_BIN", "OLLAMA_BIN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    prefix = install.ollama_prefix()
    fake_binary(prefix / "bin" / "ollama", "ok")
    assert install.find_ollama() is None, "compiled is not installed"
    here = cpumod.this_cpu()
    (prefix / STAMP).write_text(json.dumps({"flavour": "native", "smoke": Smoke(ok=True, passed=["x"]).stamp(XEON_AMX)}))
    assert install.find_ollama() is None, "a stamp from another CPU does not count"
    (prefix / STAMP).write_text(json.dumps({"flavour": "native", "smoke": Smoke(ok=True, passed=["x"]).stamp(here)}))
    assert install.find_ollama() == prefix / "bin" / "ollama"
    assert install.provenance(prefix / "bin" / "ollama").startswith("runs on this CPU")


# ------------------------------------------------------------------------------------------- one build at a time
def test_a_second_builder_waits_for_the_first_and_gives_up_after_its_timeout(tmp_path):
    env = {**os.environ, "LABKIT_HOME": str(tmp_path)}
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import time
        from labkit.servers.install import build_lock
        with build_lock("tool"):
            print("locked", flush=True)
            time.sleep(30)
        """)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        waiter = subprocess.run([sys.executable, "-c", textwrap.dedent("""
            from labkit.servers.install import build_lock
            with build_lock("tool", timeout=2):
                pass
            """)], env=env, capture_output=True, text=True, timeout=60)
        assert waiter.returncode != 0 and "still building tool after 2 s" in waiter.stderr
    finally:
        holder.kill()
        holder.wait()
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", "from labkit.servers.install import build_lock\n"
                           "with build_lock('tool', timeout=5): print('got it')"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == "got it" and time.monotonic() - started < 30, "a dead holder frees the lock"


# ------------------------------------------------------------------------------------------- bad machines
def test_no_cmake_no_go_and_a_full_disk_are_each_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    real_which = shutil.which
    monkeypatch.setattr(install.shutil, "which", lambda name: None if name in ("cmake", "go") else real_which(name))
    for build, tool in ((smoke.build_llama_cpp, "cmake"), (smoke.build_ollama, "go")):
        with pytest.raises(BinaryError) as err:  # what a learner meets: `labkit setup` → build_*()
            build(quiet=True)
        assert f"`{tool}` is not installed" in str(err.value) and "Fix: Install" in str(err.value)
        assert "could not be made to run" not in str(err.value), "a missing tool is not a CPU problem"
    monkeypatch.setattr(install.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 99, 1 << 20))
    with pytest.raises(BinaryError, match=r"(?s)Only 0.0 GiB free.*LABKIT_HOME"):
        ensure_runs_here("tool", tmp_path / "p", build=fake_build({"native": "ok"}, []), smoke=run_fake, cpu=XEON)
    assert not (tmp_path / "p").exists()


# ------------------------------------------------------------------------------------------- the web UI (npm)
def _fake_tool(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def test_the_web_ui_build_names_a_missing_or_old_node_and_installs_nothing(tmp_path, monkeypatch):
    from labkit.servers import ui
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir))  # no npm, no node
    with pytest.raises(BinaryError, match="npm/node are not installed") as exc:
        ui.build_ui()
    assert "Node.js" in exc.value.fix
    _fake_tool(bindir, "npm", "exit 0")
    _fake_tool(bindir, "node", "echo v18.19.1")  # Debian 12's node: vite 7 needs 20.19
    with pytest.raises(BinaryError, match=r"Node 18\.19 is too old .*20\.19"):
        ui.build_ui()
    assert ui.ui_built() is None and not (tmp_path / "home" / "ui").exists()


def test_a_failed_npm_build_leaves_the_placeholder_and_says_where_the_log_is(tmp_path, monkeypatch):
    from labkit.servers import ui
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    src = tmp_path / "llama.cpp"
    (src / "tools" / "ui").mkdir(parents=True)
    monkeypatch.setattr(ui, "llama_cpp_source", lambda: src)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _fake_tool(bindir, "node", "echo v20.20.2")
    _fake_tool(bindir, "npm", 'echo "npm error network request to registry.npmjs.org failed" >&2; exit 1')
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    with pytest.raises(BinaryError, match="`npm ci --no-audit --no-fund` failed") as exc:
        ui.build_ui()
    assert "network request" in exc.value.log_tail and "labkit setup --only web-ui" in exc.value.fix
    assert ui.ui_built() is None and "still being built" in (ui.ui_dir() / "index.html").read_text()
    assert not (tmp_path / "home" / "build" / f"ui-{install.LLAMA_CPP_VERSION}").exists(), "work folder removed"


def test_check_assets_names_what_a_truncated_ui_build_lacks(tmp_path):
    from labkit.servers.ui import check_assets
    (tmp_path / "_app" / "immutable" / "assets").mkdir(parents=True)
    (tmp_path / "index.html").write_text("<html>")
    assert check_assets(tmp_path) == ["_app/version.json", "bundle*.js", "bundle*.css"]
    (tmp_path / "_app" / "version.json").write_text("{}")
    (tmp_path / "_app" / "immutable" / "bundle.x1.js").write_text("")
    (tmp_path / "_app" / "immutable" / "assets" / "bundle.x1.css").write_text("")
    assert check_assets(tmp_path) == []


def test_one_tool_locator_raises_a_clear_error_finds_what_is_there_and_writes_nothing(tmp_path, monkeypatch):
    """install.require_tool: where it looked and how to get the binary when absent; the path when present; and
    looking never writes a file (no symlinks or links made on lookup)."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("LABKIT_HOME", str(home))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("LLAMA_SERVER_BIN", raising=False)
    monkeypatch.delenv("OLLAMA_BIN", raising=False)
    with pytest.raises(BinaryError, match=r"llama-bench was not found .*LLAMA_SERVER_BIN") as err:
        install.require_tool("llama-bench")
    assert "labkit setup" in err.value.fix
    with pytest.raises(BinaryError, match=r"ollama was not found \(OLLAMA_BIN") as err:
        install.require_tool("ollama")
    assert "OLLAMA_BIN=" in err.value.fix
    with pytest.raises(BinaryError, match="rpc-server") as err:
        scale.rpc_server_binary()
    assert "GGML_RPC=ON" in err.value.fix
    tool = bin_dir / "llama-bench"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    files_before = sorted(p for p in tmp_path.rglob("*") if not p.is_dir())
    assert install.require_tool("llama-bench") == tool == install.find_tool("llama-bench")
    assert install.find_tool("ollama") is None and install.find_tool("llama-server") is None
    assert sorted(p for p in tmp_path.rglob("*") if not p.is_dir()) == files_before
