# rectify: `make demo` runs the offline pipeline, `make test` the fast test suite. Both install first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rectify-installed
TORCH_VERSION ?= 2.13.0
# Used only when no local torch wheel is found: the CPU-only build (no multi-GB CUDA download).
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=

.PHONY: install test test-integration test-slow test-all demo assets lint format clean clean-cache

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then \
		echo "torch already installed: $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	elif $(PY) -m pip install -q --no-index --no-deps "torch==$(TORCH_VERSION)" >/dev/null 2>&1; then \
		echo "installed torch $(TORCH_VERSION) from a local wheel; its dependencies come from the package index"; \
		$(PY) -m pip install -q "torch==$(TORCH_VERSION)"; \
	else \
		echo "installing the CPU build of torch $(TORCH_VERSION) from $(TORCH_INDEX_URL)"; \
		$(PY) -m pip install "torch==$(TORCH_VERSION)" --index-url $(TORCH_INDEX_URL) --extra-index-url https://pypi.org/simple; \
	fi
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-integration: install
	$(PY) -m pytest -q -m integration $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -q -m "" $(PYTEST_ARGS)

assets: install
	$(PY) -m rectify.assets

demo: install
	$(PY) scripts/demo.py

lint: install
	$(PY) -m ruff check rectify scripts tests

format: install
	$(PY) -m ruff format rectify scripts tests
	$(PY) -m ruff check --fix rectify scripts tests

clean:
	rm -rf outputs .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

clean-cache:
	rm -rf "$${RECTIFY_CACHE:-$$HOME/.cache/rectify}"
