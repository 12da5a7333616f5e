# The two commands of the README. Both create the virtual environment on first use
# (CPU torch pinned by requirements/cpu-constraints.txt), then run offline.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bds-installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false

.PHONY: demo test lint setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/cpu-constraints.txt requirements/embedded-nodeps.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements/cpu-constraints.txt -e '.[embedded,dev]'
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements/embedded-nodeps.txt
	touch $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(VENV)/bin/bds demo $(ARGS)

test: $(STAMP)
	$(OFFLINE) $(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV)
