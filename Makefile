# The two commands of the README. Everything else is installed by them, into .venv and the labkit home.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: lab test setup doctor clean-venv

# A workshop pack (`labkit pack` on the instructor's machine): `make lab PACK=path/to/labkit-pack-….tar` installs
# its builds and models instead of compiling (verified, then smoke-tested on this CPU).
PACK ?=
UNPACK := $(if $(PACK),$(BIN)/labkit unpack "$(PACK)" &&,)
# A workshop room (`labkit room` on the instructor's machine): `make lab SERVER=http://HOST:8200 KEY=sk-room-…`
# builds nothing here; the lessons' servers are the room's.
SERVER ?= $(LABKIT_SERVER)
KEY ?= $(LABKIT_KEY)
ROOM := $(if $(SERVER),LABKIT_SERVER="$(SERVER)" LABKIT_KEY="$(KEY)",)

## make lab: install what lessons 00-01 need, start llama-server, open JupyterLab on lesson 00; the rest
## (Ollama, Go modules, newman, nginx) installs in the background. Jupyter options: make lab ARGS="--no-browser"
lab: $(STAMP)
	$(UNPACK) $(ROOM) $(BIN)/labkit lab $(ARGS)

## make test: install, build, then run every test and every notebook against real servers
test: $(STAMP)
	$(UNPACK) $(BIN)/labkit setup --group test
	$(BIN)/python -m pytest

setup: $(STAMP)
	$(BIN)/labkit setup --group test

doctor: $(STAMP)
	$(BIN)/labkit doctor

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -U pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e .
	$(UNPACK) true
	@# The lab's Python packages download (network-bound) while llama.cpp compiles (CPU-bound): minutes saved.
	$(if $(SERVER),true,$(BIN)/labkit setup --only model --only llama-server) & build=$$!; \
	  trap 'kill $$build 2>/dev/null' INT TERM HUP; \
	  $(BIN)/python -m pip install -q --disable-pip-version-check -e '.[all]' || { kill $$build; exit 1; }; \
	  wait $$build
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
