# Two commands for a fresh clone: `make demo` and `make test`. Both set up what is missing.
SHELL := bash
PY := .venv/bin/python
# pytest-xdist workers for `make test`: the machine has two cores
TEST_WORKERS ?= 2
export MLCORE_HOME ?= $(CURDIR)/var

.PHONY: setup demo demo-full test up down lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup  ## seed landing, run ingest -> retrain -> score through Airflow (fast profile)
	$(PY) -m mlcore demo $(DEMO_ARGS)

demo-full: setup  ## the same with the full training profile (all 60,000 images)
	$(PY) -m mlcore demo --profile full $(DEMO_ARGS)

test: setup  ## the full test suite (two workers, one test file each at a time, slowest files first: tests/conftest.py)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20 $(PYTEST_ARGS)

up: setup  ## Airflow standalone on :8080 and the MLflow UI on :5000 over the demo state
	@bash scripts/up.sh

down:
	@bash scripts/down.sh

lint: setup
	.venv/bin/ruff check mlcore dags plugins tests bench

bench: setup
	$(PY) bench/run_all.py

clean:  ## forget all local state (lake, MLflow, Airflow DB)
	rm -rf var
