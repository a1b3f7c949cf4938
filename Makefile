# The two commands: `make run` runs the whole system, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
LOCK := requirements.lock
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCK) | cksum | cut -d' ' -f1)

.PHONY: run test lint format bench clean lock

# Installs exactly what the lock names, each file checked against its hash; the project
# itself goes in without fetching anything more (setuptools and wheel are in the lock).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-* && touch $@

# After changing a dependency in pyproject.toml: both locks again (tests/test_lock.py checks);
# requirements-runtime.lock, without the dev tools, is what the image installs.
PIP_COMPILE := PIP_FIND_LINKS= $(VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras \
	--no-emit-find-links --no-emit-index-url --allow-unsafe
lock: $(STAMP)
	$(PIP_COMPILE) --extra dev -o $(LOCK) pyproject.toml
	$(PIP_COMPILE) -o requirements-runtime.lock pyproject.toml

run: $(STAMP)
	GUNICORN_WORKERS=$${GUNICORN_WORKERS:-2} $(VENV)/bin/crm run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Tests wait on the broker and the databases much of the time: 6 processes by default.
# The broker outage test stops the broker itself (`rabbitmqctl stop_app`): it runs after the
# rest, alone, so no other test is running when the broker goes away.
OUTAGE_TEST := tests/faults/test_broker_outage.py
# -rfEs: failures, errors and every skip with its reason (under CI a skip conftest.py's
# ALLOWED_SKIPS does not name fails the run).
test: lint
	$(VENV)/bin/python -m pytest -q -rfEs -n $${CRM_TEST_PROCESSES:-6} --dist loadgroup --ignore=$(OUTAGE_TEST)
	$(VENV)/bin/python -m pytest -q -rfEs -n 0 $(OUTAGE_TEST)

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(VENV)/bin/python bench/events.py
	$(VENV)/bin/python bench/contacts_import.py
	$(VENV)/bin/python bench/sales_reports.py
	$(VENV)/bin/python bench/notifications_send.py
	$(VENV)/bin/python bench/marketing_fanout.py
	$(VENV)/bin/python bench/gateway_reads.py
	$(VENV)/bin/python bench/load.py

clean:
	rm -rf var .pytest_cache .ruff_cache
