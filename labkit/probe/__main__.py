"""`python -m labkit.probe ARGS` is `labkit probe ARGS`: the same parser and error handling (an entry point, imported
by nothing, so it may reach up to labkit's command line)."""
import sys

from labkit.cli import main

raise SystemExit(main(["probe", *sys.argv[1:]]))
