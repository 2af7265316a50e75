"""`python -m labkit …` is the `labkit` command (handy when .venv/bin is not on PATH)."""
import sys

from .cli import main

sys.exit(main())
