# Two commands for a new user: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.memfit-installed
# Steadier RSS readings: glibc returns big frees to the OS at once (see memfit.measure.process).
export MALLOC_MMAP_THRESHOLD_ ?= 131072

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/memfit demo

# pytest exits 5 when it collected no test; make treats any non-zero exit as failure.
test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/run.py

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
