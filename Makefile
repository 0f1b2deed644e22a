# k210tool: the two set-up commands of the README are `make demo` and `make test`.
# Both create .venv with CPython 3.10 (found by scripts/find_python.sh) on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
K210   := $(VENV)/bin/k210tool
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= build/demo
PYTEST_ARGS ?=
# every install is pinned by constraints.txt, so developers and CI get the same versions
PIP_INSTALL = $(PY) -m pip install --quiet -c constraints.txt

.PHONY: env demo test test-fast bench lint clean constraints

$(STAMP): setup.cfg pyproject.toml constraints.txt
	@set -e; if [ ! -x "$(PY)" ]; then \
	  PYBIN=$$(PYTHON="$(PYTHON)" scripts/find_python.sh); \
	  echo "creating $(VENV) with $$PYBIN"; "$$PYBIN" -m venv "$(VENV)"; fi
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e '.[dev]'
	@touch $(STAMP)

env: $(STAMP)

demo: env
	$(K210) demo -o $(DEMO)
	$(K210) convert $(DEMO)/mobilefacenet.h5 --calib $(DEMO)/faces -o $(DEMO)/mobilefacenet.kmodel

test: env
	$(PY) -m pytest -n auto --dist loadgroup $(PYTEST_ARGS)

# the edit-run loop: everything but the slow tests (training, the MobileFaceNet compiles), stop at the first failure
test-fast: env
	$(PY) -m pytest -n auto --dist loadgroup -m 'not slow and not hardware and not gpu' -x $(PYTEST_ARGS)

# after changing setup.cfg: re-resolve in a throw-away venv and write the exact versions to constraints.txt
constraints:
	@set -e; rm -rf build/constraints-venv; PYBIN=$$(PYTHON="$(PYTHON)" scripts/find_python.sh); \
	  "$$PYBIN" -m venv build/constraints-venv; build/constraints-venv/bin/pip install --quiet -e '.[dev]'; \
	  { echo "# Exact versions that make env / make test / CI install (pip install -c constraints.txt)."; \
	    echo "# Regenerate after changing setup.cfg: make constraints (then review the diff)."; \
	    build/constraints-venv/bin/pip freeze --exclude-editable | grep -v '^k210tool'; } > constraints.txt

bench: env
	$(PY) benchmarks/run_all.py

lint: env
	$(VENV)/bin/ruff check k210tool tests benchmarks

clean:
	rm -rf build .pytest_cache
