# make demo: install, then run the main job end to end (offline, packaged dataset).
# make test: install, then run the test suite; make test-fast: the same without the tests
# marked slow (pytest.ini lists the markers).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_USE_LEGACY_KERAS := 1

.PHONY: install test test-fast demo benchmarks clean

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

test: install
	$(PYTEST) --durations=10 tests

test-fast: install
	$(PYTEST) -m "not slow" tests

demo: install
	$(VENV)/bin/cbcn demo --output demo_output

benchmarks: install
	$(PY) benchmarks/layer_speed.py

clean:
	rm -rf $(VENV) demo_output *.egg-info
