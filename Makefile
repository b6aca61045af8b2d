# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= out

.PHONY: run test lint package bench clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m local.stack

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

# Not part of `make test`: minutes of measurements; rewrites docs/benchmarks.md.
bench: $(STAMP)
	$(PY) -m bench

package: $(STAMP)
	$(PY) -m tools.package --stage prod --out $(OUT)

clean:
	rm -rf $(VENV) .local $(OUT) .pytest_cache .ruff_cache
