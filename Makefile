# Everything runs from .venv, made from the hash-pinned lock on first use: a fresh machine needs
# only Python 3.11+.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
COVERAGE_FLOOR ?= 85

.PHONY: lock run test test-fast contract lint typecheck check clean bench bench-import bench-embedded chaos abuse eval-recs

# Installs come from the hash-pinned lock (requirements/dev.lock), never from the ranges in
# pyproject.toml; the project itself goes in editable and adds nothing.
$(STAMP): pyproject.toml requirements/dev.lock
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements/dev.lock
	@# setuptools warns about every editable install; its output is shown only if it fails.
	$(BIN)/python -m pip install -q --no-deps -e . > .venv/editable.log 2>&1 || \
		{ cat .venv/editable.log; exit 1; }
	touch $(STAMP)

# Re-resolve both locks from pyproject.toml (after changing a dependency, or to take
# upgrades): `make lock`, then run the tests and commit the two files.
LOCK_TOOL := .venv-lock
lock:
	$(PY) -m venv $(LOCK_TOOL)
	$(LOCK_TOOL)/bin/python -m pip install -q 'pip-tools>=7.4,<8'
	$(LOCK_TOOL)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links \
		--extra dev --extra embedded -o requirements/dev.lock pyproject.toml
	$(LOCK_TOOL)/bin/pip-compile -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links \
		-o requirements/prod.lock pyproject.toml

run: $(STAMP)
	$(BIN)/python -m embedded

# Every tier: fast (services and the store), system (HTTP with a real worker, processes) and
# slow (contract, faults, whole stacks, OIDC, ml-latest-small); see tests/conftest.py.
test: $(STAMP)
	$(BIN)/python -m pytest --cov --cov-report=term-missing:skip-covered --cov-fail-under=$(COVERAGE_FLOOR) $(PYTEST_ARGS)

# The fast tier alone (under a minute): services and the store against the test database,
# no worker, no HTTP unless the rule is HTTP.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m fast $(PYTEST_ARGS)

# The OpenAPI contract alone (schemathesis as a user, an admin and an operator client, and a
# generated client's core flow); make test runs it too.
contract: $(STAMP)
	$(BIN)/python -m pytest tests/api/test_contract.py tests/api/test_generated_client.py $(PYTEST_ARGS)

PACKAGES := api core workers models seed embedded bench

lint: $(STAMP)
	$(BIN)/ruff check $(PACKAGES) tests
	$(BIN)/ruff format --check $(PACKAGES) tests
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy $(PACKAGES)

check: lint typecheck test

clean:
	rm -rf $(VENV) $(LOCK_TOOL) .pytest_cache .mypy_cache .ruff_cache .coverage

bench-embedded: $(STAMP)
	$(BIN)/python -m bench.embedded_server $(BENCH_ARGS)

# Fault injection against the embedded stack; prints the table (see docs/architecture.md).
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

# Floods from many loopback addresses against the embedded stack holding ml-latest-small,
# while a logged-in person reads: one table, exit 1 when a target is missed.
abuse: $(STAMP)
	$(BIN)/python -m bench.abuse $(ABUSE_ARGS)

bench-import: $(STAMP)
	$(BIN)/python -m bench.imports $(BENCH_ARGS)

# wrk is the load generator (Debian's package); installed here when missing and possible.
# Offline evaluation of the recommendations on ml-latest-small (or EVAL_ARGS=PATH).
eval-recs: $(STAMP)
	$(BIN)/python -m bench.recs $(EVAL_ARGS)

bench: $(STAMP)
	@command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null || \
		{ echo "make bench needs wrk: apt-get install wrk" >&2; exit 2; }
	$(BIN)/python -m bench.api $(BENCH_ARGS)
