# Every repeatable step of the project is a target here. `make pipeline` and `make test` are the two
# commands of the README; both build the virtual environment first when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup pipeline pretrain rehearsal test test-fast benchmark constraints gpu-wheels gpu-check clean-outputs

# constraints.txt pins versions (numpy, pandas, scipy) that need Python 3.11: say so before pip fails obscurely.
$(STAMP): pyproject.toml requirements.txt requirements-test.txt constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "$(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'):" \
	    "Python 3.11 or newer is needed (make PYTHON=python3.11 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

## Rewrite constraints.txt (the exact versions installed) from the current .venv, after a requirement changed
constraints: $(STAMP)
	{ sed -n '1,3p' constraints.txt; $(PY) -m pip freeze --all --exclude-editable | grep -v '^-e\|^#\|^pip=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

## The main job: synthetic data -> EDA -> splits -> evolution -> training -> tuning -> answer.csv -> score
pipeline: $(STAMP)
	$(VENV)/bin/livestock pipeline

## The barn-pretrained starting weights (hours on a CPU; re-run the same command to continue after an interruption)
pretrain: $(STAMP)
	$(VENV)/bin/livestock pretrain

## Full-scale rehearsal: the data and evaluation stages at the real dataset's size, each timed and measured
## (runs/rehearsal/summary.md); needs the main job's model (make pipeline). REHEARSAL_ARGS="--scale 0.1" for less.
REHEARSAL_ARGS ?=
rehearsal: $(STAMP)
	$(VENV)/bin/livestock rehearsal $(REHEARSAL_ARGS)

## The test suite (unit tests + every notebook headless on a tiny synthetic set), one pytest-xdist worker per CPU;
## --dist loadfile keeps a file's tests in one worker, so a module fixture (a trained model, a main job) is made once.
## TEST_WORKERS=0: one process, as plain `pytest` runs.
TEST_WORKERS ?= logical
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_PARALLEL)

test-fast: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_PARALLEL) -m "not slow and not benchmark"

## Benchmarks print timings; they never fail on a time
benchmark: $(STAMP)
	$(PY) -m pytest -q -s -m benchmark

## GPU check: the wheels an offline GPU machine lacks (run where PyPI is reachable; at most 64 MiB) ...
GPU_WHEELS ?= gpu_wheels
gpu-wheels: $(STAMP)
	$(PY) scripts/gpu_check.py --download-wheels $(GPU_WHEELS)

## ... and the bounded check itself (about 8 minutes on the GPU machine, which has no .venv: its own python3
## with its own PyTorch); DRY_RUN=1: the same steps at toy size on the CPU
GPU_CHECK_PY ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))
gpu-check:
	$(GPU_CHECK_PY) scripts/gpu_check.py --wheels $(GPU_WHEELS) $(if $(filter 1,$(DRY_RUN)),--dry-run)

clean-outputs:
	rm -rf runs outputs
