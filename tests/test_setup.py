"""Setup steps that need root say what to run instead of failing obscurely."""
import os
from pathlib import Path

import pytest

from labkit import setup
from labkit.errors import LabkitError


def test_apt_install_without_root_names_the_command(monkeypatch):
    monkeypatch.setattr(setup.os, "geteuid", lambda: 1000)
    with pytest.raises(LabkitError, match=r"(?s)nginx is missing.*sudo apt-get install -y nginx"):
        setup.apt_install("nginx", ["nginx"], "the reverse proxy")


def test_every_step_has_a_check_an_install_and_a_fix():
    names = [s.name for s in setup.STEPS]
    assert len(names) == len(set(names))
    for step in setup.STEPS:
        assert callable(step.check) and callable(step.install) and step.fix
        assert set(step.groups) <= {"lab", "test"}


def test_go_step_counts_as_done_only_once_the_examples_are_compiled(tmp_path, monkeypatch):
    """`go mod download` alone left ~1 min of compiling to lesson 10's first run and the tests' `go vet`: the step
    is done when each module was compiled by this Go with these dependencies (a stamp named by their hash)."""
    import shutil

    go = shutil.which("go") or "/usr/local/go/bin/go"
    monkeypatch.setenv("PATH", str(Path(go).parent) + ":" + os.environ["PATH"])
    monkeypatch.setenv("LABKIT_HOME", str(tmp_path / "home"))
    mod = tmp_path / "hello"
    mod.mkdir()
    (mod / "go.mod").write_text("module example.com/hello\n\ngo 1.24\n")
    (mod / "main.go").write_text('package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hi") }\n')
    (mod / "main_test.go").write_text('package main\n\nimport "testing"\n\nfunc TestNothing(t *testing.T) {}\n')
    monkeypatch.setattr(setup, "go_modules", lambda: [mod])
    assert setup._go_check() is None                       # downloaded (nothing to download), not compiled
    setup._go_install()
    stamp = setup.go_compiled_stamp(go, mod)
    assert stamp.is_file() and "compiled" in setup._go_check()
    (mod / "go.sum").write_text("")                        # another dependency set: compile again
    assert setup.go_compiled_stamp(go, mod) != stamp and setup._go_check() is None
