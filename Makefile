# Two entry points, both self-contained on a fresh machine with Python 3.11:
#   make run   -> set up, then build and benchmark the default target (rpi4 artifacts of MobileNetV2)
#   make test  -> set up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgekit-installed

.PHONY: setup run test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/edgekit models

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf build .pytest_cache
