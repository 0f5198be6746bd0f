# make demo: install, then run the main job end to end (offline, packaged dataset).
# make test: install, then run the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_USE_LEGACY_KERAS := 1

.PHONY: install test demo benchmarks clean

install: $(STAMP)

# Reinstall whenever the pins or the package metadata change.
$(STAMP): setup.py constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

test: install
	$(PY) -m pytest -q tests

demo: install
	$(VENV)/bin/cbcn demo --output demo_output

benchmarks: install
	$(PY) benchmarks/layer_speed.py

clean:
	rm -rf $(VENV) demo_output *.egg-info
