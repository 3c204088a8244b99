# `make demo` and `make test` set up .venv on first use (plain pip; torch/torchvision pinned via the dev extra).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test docs install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --find-links vendor -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

DEMO_RUN := runs/demo-$(shell date +%Y%m%d-%H%M%S)

# Train the digits demo, then export it as a packed 1-bit file (its real size next to the summary's).
demo: $(STAMP)
	$(VENV)/bin/bsnn train --recipe digits_tbso --out $(DEMO_RUN)
	$(VENV)/bin/bsnn export --checkpoint $(DEMO_RUN)/checkpoint.pt --out $(DEMO_RUN)/model.bsnn

test: $(STAMP)
	$(PY) -m pytest

# The API reference from the docstrings (pdoc) -> site/api/index.html; the tutorials are in docs/tutorials.
docs: $(STAMP)
	$(PY) docs/build.py site/api

clean:
	rm -rf runs site .pytest_cache
