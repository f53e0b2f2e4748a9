# Two commands matter: `make dev` (UI with the sensor running) and `make test` (the whole suite).
# Both create .venv and install the project into it first; only Python 3.11+ is needed on the machine.
# `make test` also builds .venv-readers, a second venv holding Datumaro, which the tests use as an independent
# reader of our exports; it has a venv of its own because its dependencies are older than our pins.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READERS_VENV := .venv-readers
READERS_REQUIREMENTS := dataset_pipeline_tests/readers-requirements.txt
DAGSTER_PORT ?= 3000
# dagster only honours dagster.yaml when DAGSTER_HOME is an absolute path; the launcher copies it there.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# `make dev SAMPLE=0` skips the sample dataset dropped into an empty inbox on first start.
export SAMPLE
N ?= 2000
FORMAT ?= yolo

.PHONY: install readers dev test demo bench bench-scale screenshots lint format clean

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/.installed

# --no-compile: the .pyc files are written on first import instead, which halves the install time.
$(READERS_VENV)/.installed: $(READERS_REQUIREMENTS)
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(READERS_VENV)
	$(READERS_VENV)/bin/python -m pip install --quiet --quiet --no-compile -r $(READERS_REQUIREMENTS)
	@touch $@

readers: $(READERS_VENV)/.installed

dev: install
	$(BIN)/dataset-pipeline dev --port $(DAGSTER_PORT)

# DATASET_PIPELINE_REQUIRE_READERS=1 turns a missing reader into a failure instead of a skip.
test: install readers
	DATUMARO_PYTHON=$(abspath $(READERS_VENV)/bin/python) DATASET_PIPELINE_REQUIRE_READERS=1 $(BIN)/python -m pytest

demo: install
	$(BIN)/dataset-pipeline demo

bench: install
	$(BIN)/python -m dataset_pipeline.bench --n $(N) --format $(FORMAT)

bench-scale: install
	$(BIN)/python -m dataset_pipeline.bench --scale $(if $(filter-out 2000,$(N)),1000 10000 50000 $(N),1000 10000 50000) --format $(FORMAT)

# Pictures of the asset pages as a browser shows them, from a running `make dev` (needs Debian's chromium).
screenshots: install
	$(BIN)/python -m dataset_pipeline_tests.chromium http://127.0.0.1:$(DAGSTER_PORT) docs/screenshots

lint: install
	$(BIN)/ruff check dataset_pipeline dataset_pipeline_tests
	$(BIN)/ruff format --check dataset_pipeline dataset_pipeline_tests

format: install
	$(BIN)/ruff format dataset_pipeline dataset_pipeline_tests
	$(BIN)/ruff check --fix dataset_pipeline dataset_pipeline_tests

clean:
	rm -rf $(VENV) $(READERS_VENV) .dagster_home *.egg-info
