# Postroom developer commands. `make run` and `make test` are the two the README starts with.
VENV   ?= .venv
PYTHON ?= python3
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

# Tests use the local PostgreSQL unless told otherwise (set it empty to skip the PostgreSQL runs).
export POSTROOM_TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/test
# The Celery tests use this Redis database (each run on a queue of its own); set it empty to skip them.
export POSTROOM_TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test lint bench bench-inbound setup mail-servers clean

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -e ".[test]"
	rm -f $(VENV)/.installed-*; touch $@

setup: $(STAMP)

## The web app on http://127.0.0.1:8000/ and the worker syncing every mailbox every sync.interval,
## in one process on the embedded SQLite database (Ctrl-C finishes the accounts in hand and stops).
run: $(STAMP)
	$(VENV)/bin/postroom db upgrade
	$(VENV)/bin/postroom serve

## Install Dovecot + Postfix and Chromium if missing (as root), then run the whole suite on SQLite and PostgreSQL.
test: $(STAMP) mail-servers
	$(VENV)/bin/pytest

mail-servers:
	@bash .ci/install-mail-servers
	@bash .ci/install-browser

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP) mail-servers
	$(VENV)/bin/python bench/sync_bench.py --messages 10000

## The processing mailbox: 1,000 inbound messages through `run_once`, beside an imaplib floor (docs/benchmarks.md).
bench-inbound: $(STAMP) mail-servers
	$(VENV)/bin/python bench/inbound_bench.py --messages 1000 --rounds 3 --postgres "$(POSTROOM_TEST_POSTGRES_URL)" --profile

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .mypy_cache
