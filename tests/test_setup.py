"""Setup steps that need root say what to run instead of failing obscurely."""
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
