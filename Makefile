# make demo: install, then run the main job end to end (offline, packaged dataset).
# make test: install, lint (make lint: ruff, ruff.toml), then run the test suite; make test-fast:
# the tests without those marked slow (pytest.ini lists the markers).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_USE_LEGACY_KERAS := 1

.PHONY: install lint test test-fast demo benchmarks clean

install: $(STAMP)

# Reinstall whenever the pins or the package metadata change.
$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

# pytest-xdist workers (TEST_WORKERS=0: one process). --dist loadgroup keeps the tests that
# share a module-scoped fixture on one worker (tests/conftest.py groups them), so each such
# fixture runs once.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup
# The tests and the packages' docstring examples (pytest.ini: --doctest-modules).
TEST_PATHS := tests cbcn_tf models converters

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(PYTEST) --durations=10 $(TEST_PATHS)

test-fast: install
	$(PYTEST) -m "not slow" $(TEST_PATHS)

demo: install
	$(VENV)/bin/cbcn demo --output demo_output

benchmarks: install
	$(PY) benchmarks/layer_speed.py

clean:
	rm -rf $(VENV) demo_output *.egg-info
