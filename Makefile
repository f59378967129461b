# `make run` and `make test` work on a fresh machine with PostgreSQL and Redis on localhost.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: run test setup install env db migrate seed lint bench clean chromium

run: setup seed
	./scripts/run.sh

test: setup chromium
	.venv/bin/ruff check .
	.venv/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run
	.venv/bin/pytest -n auto

setup: install env db migrate

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

env: $(STAMP)
	$(PY) scripts/bootstrap_env.py

db: env
	$(PY) scripts/ensure_services.py

migrate: db
	$(PY) manage.py migrate --noinput -v 0

seed: migrate
	$(PY) manage.py seed_demo

# The panel's browser tests need Debian's chromium; installed when missing (as root, with apt).
chromium:
	@./scripts/ensure_chromium.sh

lint: install
	.venv/bin/ruff check .
	.venv/bin/lint-imports
	.venv/bin/ruff format --check .

bench: setup
	$(PY) -m bench

clean:
	rm -rf .venv .pytest_cache .ruff_cache
