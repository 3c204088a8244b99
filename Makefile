# `make demo` and `make test` set up .venv on first use (plain pip; torch/torchvision pinned via the dev extra).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bsnn train --recipe digits_tbso

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf runs .pytest_cache
