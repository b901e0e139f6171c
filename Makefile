# Two entry points do all the set-up on a fresh machine:
#   make demo   builds the engine, installs everything and runs `scalper demo`
#   make test   the same set-up, then the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
RUST_SOURCES := $(wildcard rust/Cargo.toml rust/Cargo.lock rust/src/*.rs)

.PHONY: demo test lint bench setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(RUST_SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[platform,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/scalper demo

test: $(STAMP)
	cargo test --quiet --manifest-path rust/Cargo.toml --no-default-features
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cargo fmt --manifest-path rust/Cargo.toml --check
	cargo clippy --quiet --manifest-path rust/Cargo.toml -- -D warnings

bench: $(STAMP)
	$(BIN)/python bench/bench_engine.py

clean:
	rm -rf $(VENV) rust/target scalper/_engine*.so
