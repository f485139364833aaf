# Two commands a new machine needs: `make run` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-slow gpu-check venv clean

# Python >= 3.10: vermin checks it statically (tests/test_py310.py compiles the sources and resolves the presets
# under real 3.10/3.12/3.13 interpreters when they are installed).
VERMIN := $(BIN)/vermin --no-config-file --no-tips --violations -t=3.10- --eval-annotations --feature union-types

run: $(STAMP)
	$(BIN)/advlc

# The default suite (a few minutes on 2 cores): vermin (Python 3.10), ruff (lint and format;
# pyproject.toml's [tool.ruff]), mypy on the typed core ([tool.mypy]), then every test but those marked slow or gpu.
test: $(STAMP)
	$(VERMIN) engine tui tests presets
	$(BIN)/ruff check --no-cache engine tui tests scripts
	$(BIN)/ruff format --check --no-cache engine tui tests scripts presets
	$(BIN)/mypy
	$(BIN)/python -m pytest

# The slow end-to-end tests: real training runs, detached runs, the wheel in a fresh venv.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m 'slow and not gpu'

# On a GPU machine: every GPU measurement and `pytest -m gpu` in under 8 minutes, into one folder
# (scripts/gpu-check.sh; GPU_CHECK_ARGS='--out DIR' or '--smoke'); then `$(BIN)/advlc bench fold DIR`.
gpu-check: $(STAMP)
	scripts/gpu-check.sh $(GPU_CHECK_ARGS)

venv: $(STAMP)

# Re-install only when the dependency list changes. torchattacks pins an old `requests`,
# so it goes in without its (declared) dependencies; its real ones (torch, torchvision,
# scipy, numpy) come with advlc itself.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps 'torchattacks==3.5.1'
	touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
