# Two commands on a fresh machine (see README.md):
#   make demo   set up the advisor and answer the example question
#   make test   set up everything and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint setup bench clean
demo: $(VENV)/.light
	$(VENV)/bin/advisor recommend --docs 500k --tokens 2e9

test: lint
	scripts/slurm-local || echo "slurm unavailable: tests/runners/test_slurm.py will skip"
	scripts/setup-sky || echo "SkyPilot's loader not installed: the SkyPilot parse in tests/advisor/test_launch_spec.py will skip"
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider

# The layers (import-linter's contracts in pyproject.toml), lint and types: each must be clean
lint: $(VENV)/.full
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pyright

setup: $(VENV)/.full

bench: $(VENV)/.full
	$(PY) bench/advisor_latency.py

$(VENV)/.light: pyproject.toml scripts/setup
	scripts/setup light
	touch $@

$(VENV)/.full: pyproject.toml scripts/setup scripts/tested-versions.txt
	scripts/setup full
	touch $@ $(VENV)/.light

clean:
	rm -rf $(VENV) build *.egg-info
