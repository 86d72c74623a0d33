# kexue — the two commands a new user runs are `make reproduce` and `make test`. (To use kexue as a library,
# `pip install` it: see the README.)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kexue-installed
PRESET ?= quick
PYTEST_ARGS ?=

.PHONY: help install browser data reproduce tables test test-all lint typecheck docs dist torch-compat bench clean

help:
	@echo "make reproduce   set up .venv, fetch the real data, run every experiment's '$(PRESET)' preset, write the report"
	@echo "                 (quick: into results/quick, then regenerate the README/docs claims tables)"
	@echo "make tables      regenerate the README/docs claims tables from results/quick"
	@echo "make test        set up .venv, fetch the data the tests use, install chromium (report test), run the tests"
	@echo "make bench       install the peer libraries into .venv-bench, run benchmarks/*.py, regenerate the perf tables"
	@echo "make lint        ruff format --check + ruff check;  make typecheck: mypy on src/"
	@echo "make docs        build the documentation site into site/ (mkdocs build --strict)"
	@echo "make dist        build the sdist and wheel into dist/ and check them with twine"
	@echo "make torch-compat TORCH=2.14.1   install the built wheel next to that torch in .venv-torch and run"
	@echo "                 the examples and the library tests there (downloads that torch build)"

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Everything `make` runs (experiments, report, tests, docs), at the exact versions of constraints.txt.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[all,dev,docs]"
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
	rm -rf results/quick.new/*/checkpoints results/quick.new/ptuning/runs
	rm -rf results/quick && mv results/quick.new results/quick
	$(MAKE) tables
else
	$(BIN)/kexue reproduce --preset $(PRESET) --out runs/reproduce-$(PRESET)
endif

tables: install
	$(BIN)/python -m kexue.report.docs_tables --results results/quick

# Passive OpenMP waiting: on a loaded 2-core machine the default active waiting stalls multi-threaded ops.
test: data browser
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: data browser
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q --runslow $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff format --check src tests benchmarks examples docs/griffe_napoleon.py docs/hooks.py
	$(BIN)/ruff check src tests benchmarks examples docs/griffe_napoleon.py docs/hooks.py

typecheck: install
	$(BIN)/mypy

# tests/test_packaging.py builds the site the same way in `make test`; this target keeps it in site/ to read.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

dist: install
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .
	$(BIN)/twine check --strict dist/*

# The torch range of pyproject.toml against a real torch other than the pinned one: a fresh venv gets that torch
# first, as a user's environment would have it, then the built wheel; the torch must stay, and the examples and
# the library tests must pass on it. Not part of `make test`: a torch other than the CPU build is a CUDA
# download of several GB.
TORCH ?= 2.14.1
TORCH_TESTS ?= tests/test_examples.py tests/test_readme.py tests/test_topk.py tests/test_contrastive.py \
	tests/test_tailr.py tests/test_regularizers.py tests/test_multitask.py tests/test_simsiam.py tests/test_ign.py
torch-compat: dist
	rm -rf .venv-torch
	$(PY) -m venv .venv-torch
	.venv-torch/bin/python -m pip install --quiet "torch==$(TORCH)"
	.venv-torch/bin/python -m pip install --quiet "$$(ls dist/kexue-*.whl)[all,dev]"
	.venv-torch/bin/python -c "import torch, kexue; v = torch.__version__.split('+')[0]; \
		assert v == '$(TORCH)', f'torch changed to {torch.__version__}'; assert 'site-packages' in kexue.__file__; \
		print('torch', torch.__version__, 'kexue', kexue.__version__, 'from', kexue.__file__)"
	.venv-torch/bin/python -m pip check
	.venv-torch/bin/python -m pytest -q -p no:cacheprovider $(TORCH_TESTS)

.venv-bench/.kexue-installed: pyproject.toml constraints.txt benchmarks/peers.txt
	$(PY) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet --upgrade pip setuptools wheel
	.venv-bench/bin/python -m pip install --quiet -c constraints.txt -e ".[text]"
	@# One peer at a time, --no-deps (several declare torchvision or an unpinned torch), --no-build-isolation
	@# (torchsort compiles against the installed CPU torch). Directories holding nvcc are left off PATH: torchsort
	@# builds its CUDA extension whenever nvcc is found, which fails against a CPU torch. A peer that fails to
	@# install is reported and its benchmark rows read "not installed".
	@nonvcc=$$(echo "$$PATH" | tr ':' '\n' | while read -r d; do [ -x "$$d/nvcc" ] || echo "$$d"; done | paste -sd: -); \
	sed -e 's/#.*//' -e '/^[[:space:]]*$$/d' benchmarks/peers.txt | while read -r pkg; do \
		PATH="$$nonvcc" .venv-bench/bin/python -m pip install --quiet --no-deps --no-build-isolation "$$pkg" \
			|| echo "kexue: could not install peer $$pkg; its benchmark rows will read 'not installed'"; \
	done
	@touch $@

# Each script writes benchmarks/results/<name>.json (committed); the README/docs performance tables are generated
# from those files, and a test checks that they agree.
bench: .venv-bench/.kexue-installed data
	@for f in benchmarks/[!_]*.py; do echo "== $$f"; .venv-bench/bin/python $$f || exit 1; done
	.venv-bench/bin/python -m kexue.report.perf_tables

clean:
	rm -rf $(VENV) .venv-bench .venv-torch runs site dist .pytest_cache .mypy_cache .ruff_cache
