# Two commands work on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.gliotl-installed

.PHONY: demo test lint install clean bench test-drevalpy

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Reinstalls only when pyproject.toml or TORCH_SPEC changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,ray]"
	echo "$(TORCH_SPEC)" > $(STAMP)

install: $(STAMP)
	@grep -qxF '$(TORCH_SPEC)' $(STAMP) || { rm -f $(STAMP); $(MAKE) $(STAMP); }

demo: install
	$(BIN)/gliotl demo

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# drevalpy 1.6.0 would downgrade typer (and pandas) in .venv, so it gets an environment of its
# own, with the same torch; its tests are skipped in `make test`.
DREVALPY_VENV ?= .venv-drevalpy
$(DREVALPY_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(DREVALPY_VENV)
	$(DREVALPY_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(DREVALPY_VENV)/bin/python -m pip install -q -e ".[drevalpy]" "pytest>=7" pytest-timeout
	touch $@

test-drevalpy: $(DREVALPY_VENV)/.installed
	$(DREVALPY_VENV)/bin/python -m pytest -q -m drevalpy tests/interop

bench: install
	$(BIN)/python benchmarks/bench_drug.py
	$(BIN)/python benchmarks/bench_mri_data.py
	$(BIN)/python benchmarks/bench_mgmt.py

clean:
	rm -rf $(VENV) $(DREVALPY_VENV) build src/*.egg-info
