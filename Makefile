# k210tool: the two set-up commands of the README are `make demo` and `make test`.
# Both create .venv with CPython 3.10 (found by scripts/find_python.sh) on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
K210   := $(VENV)/bin/k210tool
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= build/demo
PYTEST_ARGS ?=

.PHONY: env demo test bench lint clean

$(STAMP): setup.cfg pyproject.toml
	@set -e; if [ ! -x "$(PY)" ]; then \
	  PYBIN=$$(PYTHON="$(PYTHON)" scripts/find_python.sh); \
	  echo "creating $(VENV) with $$PYBIN"; "$$PYBIN" -m venv "$(VENV)"; fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

env: $(STAMP)

demo: env
	$(K210) demo -o $(DEMO)
	$(K210) convert $(DEMO)/mobilefacenet.h5 --calib $(DEMO)/faces -o $(DEMO)/mobilefacenet.kmodel

test: env
	$(PY) -m pytest -n auto --dist loadgroup $(PYTEST_ARGS)

bench: env
	$(PY) benchmarks/run_all.py

lint: env
	$(VENV)/bin/ruff check k210tool tests benchmarks

clean:
	rm -rf build .pytest_cache
