"""Where the lab keeps everything it downloads or builds: one folder, `LABKIT_HOME` (default ~/.cache/labkit)."""
from __future__ import annotations

import os
from pathlib import Path

# What lessons may use (tests/test_layout.py checks that lessons import nothing else from this module).
__all__ = ['data_dir', 'repo_root']


def home() -> Path:
    """The labkit home; created on first use so every caller can write into it."""
    path = Path(os.environ.get("LABKIT_HOME", "~/.cache/labkit")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def subdir(*parts: str) -> Path:
    """A folder under the labkit home (models, logs, run, ...), created on demand."""
    path = home().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The course checkout (where notebooks/ and data/ live), found from this file."""
    return Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    return repo_root() / "data"
