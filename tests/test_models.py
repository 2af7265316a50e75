"""The embedded model is fetched, verified and cached; bad model paths fail clearly."""
from pathlib import Path

import pytest

from labkit import models
from labkit.errors import ModelError


def test_embedded_model_is_cached_and_verified():
    path = models.fetch_embedded(quiet=True)
    assert path.is_file() and path.stat().st_size == models.EMBEDDED.size
    assert models.is_verified(path)
    assert path.read_bytes()[:4] == b"GGUF"


def test_user_model_overrides_embedded(monkeypatch, tmp_path):
    fake = tmp_path / "My_Model.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 16)
    monkeypatch.setenv("LABKIT_MODEL", str(fake))
    assert models.model_path() == fake
    assert models.model_name() == "my-model"


def test_missing_model_names_the_path(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_MODEL", str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelError, match="not found.*nope.gguf"):
        models.model_path()


def test_corrupt_model_is_rejected_before_the_server_sees_it(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"<html>404</html>")
    with pytest.raises(ModelError, match="not a GGUF"):
        models.check_gguf(bad)


def test_tampered_cache_is_not_trusted(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path))
    target = models.cached_path()
    target.write_bytes(b"GGUF" + b"x" * 10)
    models._stamp(target, models.EMBEDDED)
    target.write_bytes(b"GGUF" + b"y" * 20)  # changed after it was verified
    assert not models.is_verified(Path(target))


def test_a_lesson_that_needs_the_embedded_model_says_so_in_one_line(monkeypatch):
    from labkit.models import needs_embedded_model
    monkeypatch.delenv("LABKIT_MODEL", raising=False)
    needs_embedded_model("Lesson 11", "its grammar is written for ChatML")  # the embedded model: nothing to say
    monkeypatch.setenv("LABKIT_MODEL", "/models/other.gguf")
    with pytest.raises(ModelError, match=r"Lesson 11 needs the embedded model \(smollm2-135m\): its grammar") as e:
        needs_embedded_model("Lesson 11", "its grammar is written for ChatML")
    assert "unset LABKIT_MODEL" in e.value.fix


def test_a_gguf_given_as_the_model_name_is_a_clear_error(tmp_path):
    """`model=` is the served name; a file there (what `model=` meant before) says to pass it as `gguf=`."""
    from labkit.errors import ModelError
    from labkit.models import check_model_name
    from labkit.servers import start_llama_server, start_ollama
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF")
    for start in (start_llama_server, start_ollama):
        with pytest.raises(ModelError, match=r"model='.*mine\.gguf' is a file") as err:
            start(model=str(gguf), port=1)
        assert "gguf=" in err.value.fix
    assert check_model_name("hf.co/unsloth/Qwen3-8B-GGUF:Q4_K_M") == "hf.co/unsloth/Qwen3-8B-GGUF:Q4_K_M"
