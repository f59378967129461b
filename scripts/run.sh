#!/usr/bin/env bash
# Starts the web server (admin API, panel, gateway), a Celery worker and beat; Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT="${PORT:-8000}"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap cleanup INT TERM EXIT

.venv/bin/uvicorn saas.asgi:application --host 127.0.0.1 --port "$PORT" \
  --loop uvloop --http saas.server:HttpToolsProtocolWithDeadlines --no-access-log --log-level warning &
pids+=($!)
# Supervised: a worker that dies (kombu can crash on a broker restart) is started again.
scripts/supervise.sh .venv/bin/celery -A saas worker --loglevel WARNING --concurrency 2 \
  --without-heartbeat --without-mingle --without-gossip &
pids+=($!)
.venv/bin/celery -A saas beat --loglevel WARNING \
  --schedule "${TMPDIR:-/tmp}/tollgate-celerybeat-schedule" &
pids+=($!)

# Wait for the server before printing the instructions, so the curl works when shown.
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$PORT/health/live" >/dev/null 2>&1 && break
  sleep 0.2
done
$PY manage.py demo_info --port "$PORT"
$PY manage.py panel_admin --port "$PORT"
wait -n "${pids[@]}"
