# Two entry points do all the set-up: `make demo` and `make test`. Both create or refresh .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench venv clean

# torch first, pinned, so that pip never fetches a multi-GB CUDA build; then the project without build
# isolation, so that the compiled recurrence loop is built against that torch.
$(STAMP): pyproject.toml setup.py src/elman/layer/_loops.cpp
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check "setuptools>=64" wheel ninja
	$(BIN)/pip install --quiet --disable-pip-version-check --no-build-isolation -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/elman demo --quick

test: venv
	ELMAN_REQUIRE_COMPILED=1 $(BIN)/python -m pytest -q -rs  # -rs: why each skipped test was skipped
	$(BIN)/ruff check src tests benchmarks

lint: venv
	$(BIN)/ruff check src tests benchmarks

bench: venv
	$(BIN)/python benchmarks/layer.py

clean:
	rm -rf $(VENV) build src/*.egg-info src/elman/layer/*.so
