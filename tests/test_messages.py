"""labkit's most common messages read in the learner's edition (#26 item 6): real errors, provoked without servers,
in Chinese under LABKIT_LANG=zh-CN and unchanged in English under LABKIT_LANG=en (conftest sets en for the rest)."""
import re
from pathlib import Path

import pytest

from labkit import models, setup
from labkit.errors import BinaryError, ModelError
from labkit.servers import install

CJK = re.compile(r"[\u4e00-\u9fff]")


def _raised(call, kind):
    with pytest.raises(kind) as err:
        call()
    return err.value


@pytest.fixture
def not_a_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "notes.gguf"
    path.write_bytes(b"PK\x03\x04 a zip, not a model")
    return path


def test_a_missing_model_file_is_named_in_chinese_and_in_english(monkeypatch, tmp_path):
    missing = tmp_path / "nope.gguf"
    monkeypatch.setenv("LABKIT_LANG", "zh-CN")
    zh = _raised(lambda: models.check_gguf(missing), ModelError)
    assert zh.what == f"找不到模型文件：{missing}"
    assert "LABKIT_MODEL" in zh.fix and "内置模型" in zh.fix
    assert "解决办法：" in str(zh) and "Fix:" not in str(zh)
    monkeypatch.setenv("LABKIT_LANG", "en")
    en = _raised(lambda: models.check_gguf(missing), ModelError)
    assert en.what == f"Model file not found: {missing}"
    assert en.fix == "Check the path in LABKIT_MODEL, or unset it to use the embedded model."
    assert not CJK.search(str(en))


def test_a_file_that_is_not_gguf_says_so_in_chinese_and_in_english(monkeypatch, not_a_gguf):
    monkeypatch.setenv("LABKIT_LANG", "zh-CN")
    zh = _raised(lambda: models.check_gguf(not_a_gguf), ModelError)
    assert zh.what.startswith(f"{not_a_gguf} 不是 GGUF 模型文件（开头是 b'PK\\x03\\x04'，应为 b'GGUF'）")
    assert "LABKIT_MODEL" in zh.fix and ".gguf" in zh.fix and CJK.search(zh.fix)
    monkeypatch.setenv("LABKIT_LANG", "en")
    en = _raised(lambda: models.check_gguf(not_a_gguf), ModelError)
    assert en.what == (f"{not_a_gguf} is not a GGUF model (starts with b'PK\\x03\\x04', expected b'GGUF'); "
                       "it is corrupt or not a llama.cpp model.")
    assert en.fix == "Re-download it, or point LABKIT_MODEL at a .gguf file."


def test_a_missing_server_binary_is_named_in_chinese_and_in_english(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))  # no lab build to find
    monkeypatch.delenv("LLAMA_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # and nothing on PATH
    monkeypatch.setenv("LABKIT_LANG", "zh-CN")
    zh = _raised(lambda: install.require_tool("llama-server", "/nonexistent"), BinaryError)
    assert zh.what.startswith("找不到 llama-server（查找过：给定的路径、") and "LLAMA_SERVER_BIN" in zh.what
    assert "`labkit setup`" in zh.fix and "LLAMA_SERVER_BIN=/path/to/llama-server" in zh.fix and CJK.search(zh.fix)
    monkeypatch.setenv("LABKIT_LANG", "en")
    en = _raised(lambda: install.require_tool("llama-server", "/nonexistent"), BinaryError)
    assert en.what == ("llama-server was not found (the path given, next to LLAMA_SERVER_BIN, on PATH, "
                       "or in the lab's build).")
    assert en.fix == ("Run `labkit setup` (it builds llama.cpp with the tools the course uses, and Ollama), "
                      "or set LLAMA_SERVER_BIN=/path/to/llama-server.")


def test_a_missing_build_tool_is_named_in_chinese(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no cmake, no compiler
    monkeypatch.setenv("LABKIT_LANG", "zh-CN")
    zh = _raised(install.prepare_llama_cpp, BinaryError)
    assert zh.what == "没有安装 `cmake`，编译 llama.cpp 时需要它。"
    assert "apt-get install cmake" in zh.fix and "LLAMA_SERVER_BIN" in zh.fix and CJK.search(zh.fix)
    monkeypatch.setenv("LABKIT_LANG", "en")
    en = _raised(install.prepare_llama_cpp, BinaryError)
    assert en.what == "`cmake` is not installed, and it is needed to build llama.cpp."


def test_every_setup_step_has_a_chinese_fix_read_when_shown(monkeypatch):
    """doctor's fix column: chosen when it is shown, so a language set after import still counts."""
    monkeypatch.setenv("LABKIT_LANG", "zh-CN")
    for step in setup.STEPS:
        assert CJK.search(step.fix), f"{step.name}: no Chinese fix"
        assert step.fix != step.fix_en
    monkeypatch.setenv("LABKIT_LANG", "en")
    for step in setup.STEPS:
        assert step.fix == step.fix_en and not CJK.search(step.fix), step.name
    assert setup.STEPS[1].fix == "labkit setup (builds llama.cpp, ~8 min) or set LLAMA_SERVER_BIN"


def test_the_chinese_locale_alone_chooses_chinese_messages(monkeypatch, tmp_path):
    monkeypatch.delenv("LABKIT_LANG")
    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_MESSAGES", raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")
    err = _raised(lambda: models.check_gguf(tmp_path / "nope.gguf"), ModelError)
    assert err.what.startswith("找不到模型文件")


def test_a_server_that_exits_during_start_is_reported_in_chinese(monkeypatch, tmp_path):
    """labkit.up's most common failure, with a stand-in process that exits at once (no server is started)."""
    import sys

    from labkit.errors import ServerStartError
    from labkit.procs import ManagedProcess, wait_until_ready
    monkeypatch.setenv("LABKIT_LANG", "zh-CN")
    dying = ManagedProcess([sys.executable, "-c", "print('bad flag'); raise SystemExit(3)"],
                           log_path=tmp_path / "dying.log")
    err = _raised(lambda: wait_until_ready(dying, lambda: False, timeout=30, what="llama-server"), ServerStartError)
    assert err.what == "llama-server 在启动过程中退出了（退出码 3）。"
    assert str(tmp_path / "dying.log") in err.fix and "日志" in err.fix
    assert "日志的最后几行：" in str(err) and "bad flag" in err.log_tail
