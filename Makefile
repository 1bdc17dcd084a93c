# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
DEMO   ?= demo-out

.PHONY: venv demo test bench clean

$(STAMP): pyproject.toml $(wildcard protos/*/*/*.proto) protos/build_backend.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m embedsvc.demo --out $(DEMO)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/embed_cpu.py

clean:
	rm -rf $(VENV) $(DEMO) build *.egg-info
