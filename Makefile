# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# checkov pins a boto3 that the project's venv cannot have: it gets a venv of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
OUT ?= out

.PHONY: run test test-fast lint package checkov bench clean browser

# The venv also gets the `dlc` command line client (dlc/, editable: .venv/bin/dlc runs this checkout).
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

$(CHECKOV_STAMP): requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	touch $(CHECKOV_STAMP)

# The console's tests drive the system's Chromium (Playwright cannot download its own browser
# here). As root on Debian, `make test` installs the `chromium` package; elsewhere install a
# Chromium yourself, or point CHROMIUM at one.
browser:
	@if [ -n "$$CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Chromium for the browser tests: apt-get install chromium"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; \
	else \
	  echo "The browser tests need Chromium: on Debian, sudo apt-get install chromium;" \
	    "or set CHROMIUM=/path/to/chromium" >&2; \
	  exit 1; \
	fi

run: $(STAMP)
	$(PY) -m local.stack

# The whole suite, as CI runs it. Test files are spread over the cores (PYTEST_WORKERS), a
# file's tests staying together so that a module's stack or package is built once. The
# schemathesis module runs beside them in a pytest of its own: inside an xdist worker its
# plugin does not expand one test per API operation, and it would send a fifth of its cases.
PYTEST_WORKERS ?= auto
FUZZ_TESTS := tests/e2e/test_schemathesis.py
FUZZ_LOG := .local/schemathesis.log
test: $(STAMP) $(CHECKOV_STAMP) browser
	$(PY) -m ruff check .
	@mkdir -p $(dir $(FUZZ_LOG))
	@$(PY) -m pytest -q -p no:xdist $(FUZZ_TESTS) > $(FUZZ_LOG) 2>&1 & fuzz=$$!; \
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --ignore $(FUZZ_TESTS); suite=$$?; \
	wait $$fuzz; fuzzed=$$?; echo "--- $(FUZZ_TESTS)"; cat $(FUZZ_LOG); \
	test $$suite -eq 0 && test $$fuzzed -eq 0

# The edit loop: the unit tests (no AWS, no stack) in seconds, without the few slow on purpose.
test-fast: $(STAMP)
	$(PY) -m pytest -q tests/unit -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check .

# Not part of `make test`: minutes of measurements; rewrites docs/benchmarks.md.
bench: $(STAMP)
	$(PY) -m bench

package: $(STAMP)
	$(PY) -m tools.package --stage prod --out $(OUT)

# The packaged template's security checks (also run by `make test`).
checkov: package $(CHECKOV_STAMP)
	$(PY) -m tools.checkov_scan $(OUT)/sam.json

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .local $(OUT) .pytest_cache .ruff_cache
