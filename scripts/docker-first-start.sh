#!/bin/sh
# The compose stack's `migrate` service, run to completion before the web server, the worker
# and beat start: migrations, the first panel admin (its generated password printed once, in
# `docker compose logs migrate`, or ADMIN_PASSWORD), and with DEMO=1 the demo tenant.
# Every step is idempotent, so it runs again at each `docker compose up` (and upgrade).
set -eu
python manage.py migrate --noinput
python manage.py panel_admin --port "${PUBLIC_PORT:-8000}"
if [ "${DEMO:-0}" = 1 ]; then
  python manage.py seed_demo --port "${PORT:-8000}"
  python manage.py demo_info --port "${PUBLIC_PORT:-8000}"
fi
