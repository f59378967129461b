# `make run` and `make test` work on a fresh machine with PostgreSQL and Redis on localhost.
PY := .venv/bin/python
STAMP := .venv/.installed

.PHONY: run test setup install lock env db migrate seed lint bench clean chromium

run: setup seed
	./scripts/run.sh

test: setup chromium
	.venv/bin/ruff check .
	.venv/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run
	.venv/bin/pytest -n auto

setup: install env db migrate

install: $(STAMP)

# Exactly the locked versions (hash-checked), then the project itself without resolving again:
# what make test runs against is the lock, as in the image (Dockerfile: runtime.lock).
$(STAMP): pyproject.toml requirements/dev.lock
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# After changing dependencies in pyproject.toml: pin every version, with hashes, for any
# platform on Python 3.11; the dev lock keeps the runtime pins (-c). Upgrade: LOCK_FLAGS=-U.
UV_COMPILE = .venv/bin/uv pip compile pyproject.toml --universal --python-version 3.11 \
	--generate-hashes --no-header -q $(LOCK_FLAGS)
lock:
	test -x .venv/bin/uv || $(PY) -m pip install --quiet uv
	$(UV_COMPILE) -o requirements/runtime.lock
	$(UV_COMPILE) --extra dev -c requirements/runtime.lock -o requirements/dev.lock

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
