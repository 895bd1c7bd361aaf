# `make run`: set up and run the whole pipeline (dvc repro). `make test`: set up and run the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?=
DATA ?=
DEVICE ?= auto
GPU_CHECK_OUT ?= reports/gpu_check.json
# When this make started (before any install): make run's wall-time record counts from here (reports/run_time.json).
STARTED := $(shell date +%s.%N)
# This pipeline runs offline on clusters: no usage telemetry from MLflow, Ray or albumentations.
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: run test test-expensive bench seeds gpu-check clean-venv

# pip -qq: errors only; its warnings (e.g. about index locations in a machine's pip.conf) are not ours to show.
# --no-compile: pip byte-compiles every module it installs (81 s of install, 2 cores, of which 49 s compiling); Python
# compiles the modules a process imports on first use and caches them (8 s for the pipeline's imports), so the
# install skips it. Not when PYTHONDONTWRITEBYTECODE is set: nothing would be cached, every process would recompile.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq $(if $(PYTHONDONTWRITEBYTECODE),,--no-compile) -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	test -d .dvc || $(BIN)/dvc init --quiet
	$(if $(PROFILE),$(BIN)/python -m pipeline apply-profile $(PROFILE) $(if $(DATA),--data "$(DATA)"))
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pipeline time-stages --since $(STARTED) -- $(BIN)/dvc repro
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc metrics show
	$(BIN)/python -m pipeline compare --strict

# PYTHONFAULTHANDLER: a crash after pytest's own handler is off (interpreter shutdown) still prints its stack.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	PYTHONFAULTHANDLER=1 PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

# The fault tests `make test` leaves out for time (pytest marker `expensive`, README: Testing).
test-expensive: $(STAMP)
	PYTHONFAULTHANDLER=1 PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -m expensive

bench: $(STAMP)
	$(BIN)/python -m pipeline bench

# `make seeds [SEEDS="1 2 3 7 42"]`: every balancer trained and scored once per seed in seed_runs/ (README: Reproducibility).
SEEDS ?= 1 2 3 7 42
seeds: $(STAMP)
	$(BIN)/python -m pipeline seeds --seeds $(SEEDS)

# `make gpu-check [DEVICE=auto|cuda|cpu]`: environment, one-rank all-reduce, every balancer and stl, predict (README).
gpu-check: $(STAMP)
	$(BIN)/python -m pipeline gpu-check --device $(DEVICE) --out $(GPU_CHECK_OUT)

clean-venv:
	rm -rf $(VENV)
