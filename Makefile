# kexue — the two commands a new user runs are `make reproduce` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kexue-installed
PRESET ?= quick
PYTEST_ARGS ?=

.PHONY: help install browser data reproduce tables test test-all lint typecheck bench clean

help:
	@echo "make reproduce   set up .venv, fetch the real data, run every experiment's '$(PRESET)' preset, write the report"
	@echo "                 (quick: into results/quick, then regenerate the README/docs claims tables)"
	@echo "make tables      regenerate the README/docs claims tables from results/quick"
	@echo "make test        set up .venv, fetch the data the tests use, install chromium (report test), run the tests"
	@echo "make bench       install the peer libraries into .venv-bench, run benchmarks/*.py, regenerate the perf tables"
	@echo "make lint        ruff format --check + ruff check;  make typecheck: mypy on src/"

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev,text]"
	@touch $(STAMP)

install: $(STAMP)

# Headless Chromium renders report.html in tests/test_report.py (every plot loads, no script errors). Installed
# from Debian's archive when missing and we are root (CI); otherwise that test skips, saying why.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "kexue: installing chromium for the report's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
			|| echo "kexue: could not install chromium; the report's browser test will skip (fail under CI=true)"; \
	else \
		echo "kexue: $(CHROMIUM) is missing and this is not a root Debian shell; the report's browser test" \
			"will skip. To run it: sudo apt-get install chromium"; \
	fi

data: install
	$(BIN)/kexue data fetch all

# The quick preset's run folders are committed under results/quick; the README and docs claims tables are generated
# from them (a test checks that they agree). Other presets write to runs/ and change no committed file.
reproduce: data
ifeq ($(PRESET),quick)
	rm -rf results/quick.new
	$(BIN)/kexue reproduce --preset quick --out results/quick.new
	rm -rf results/quick.new/*/checkpoints
	rm -rf results/quick && mv results/quick.new results/quick
	$(MAKE) tables
else
	$(BIN)/kexue reproduce --preset $(PRESET) --out runs/reproduce-$(PRESET)
endif

tables: install
	$(BIN)/python -m kexue.report.docs_tables --results results/quick

test: data browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: data browser
	$(BIN)/python -m pytest -q --runslow $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks

typecheck: install
	$(BIN)/mypy

.venv-bench/.kexue-installed: pyproject.toml benchmarks/peers.txt
	$(PY) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	.venv-bench/bin/python -m pip install --quiet -e ".[text]"
	@# One peer at a time, --no-deps (several declare torchvision or an unpinned torch), --no-build-isolation
	@# (torchsort compiles against the installed CPU torch). A peer that fails to install is reported and its
	@# benchmark rows read "not installed".
	@sed -e 's/#.*//' -e '/^[[:space:]]*$$/d' benchmarks/peers.txt | while read -r pkg; do \
		.venv-bench/bin/python -m pip install --quiet --no-deps --no-build-isolation "$$pkg" \
			|| echo "kexue: could not install peer $$pkg; its benchmark rows will read 'not installed'"; \
	done
	@touch $@

# Each script writes benchmarks/results/<name>.json (committed); the README/docs performance tables are generated
# from those files, and a test checks that they agree.
bench: .venv-bench/.kexue-installed data
	@for f in benchmarks/[!_]*.py; do echo "== $$f"; .venv-bench/bin/python $$f || exit 1; done
	.venv-bench/bin/python -m kexue.report.perf_tables

clean:
	rm -rf $(VENV) .venv-bench runs .pytest_cache .mypy_cache .ruff_cache
