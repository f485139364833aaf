# Two commands a new machine needs: `make run` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test venv clean

run: $(STAMP)
	$(BIN)/advlc

test: $(STAMP)
	$(BIN)/python -m pytest

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
