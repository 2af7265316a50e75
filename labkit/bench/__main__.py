"""`python -m labkit.bench ARGS` is `labkit bench ARGS`: the same parser and error handling (an entry point, imported
by nothing, so it may reach up to labkit's command line)."""
import sys

from labkit.cli import main

raise SystemExit(main(["bench", *sys.argv[1:]]))
