# The two commands of the README. Everything else is installed by them, into .venv and the labkit home.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: lab test setup doctor clean-venv

## make lab: install, build the servers (first time only), start llama-server, open JupyterLab on lesson 00
lab: $(STAMP)
	$(BIN)/labkit lab

## make test: install, build, then run every test and every notebook against real servers
test: $(STAMP)
	$(BIN)/labkit setup --group test
	$(BIN)/python -m pytest

setup: $(STAMP)
	$(BIN)/labkit setup --group test

doctor: $(STAMP)
	$(BIN)/labkit doctor

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -U pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[all]'
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
