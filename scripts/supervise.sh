#!/usr/bin/env bash
# Runs a command and starts it again whenever it exits, until this script is stopped (TERM or
# INT, passed on to the command). scripts/run.sh runs the Celery worker under it: kombu (5.7.0,
# the newest release) can crash the worker while restoring unacknowledged messages after a
# broker restart; compose (`restart: unless-stopped`) and Kubernetes (a Deployment's pods
# restart always) do the same in production.
set -uo pipefail
child=""
stop() {
  trap - INT TERM
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null
  exit 0
}
trap stop INT TERM
while true; do
  "$@" &
  child=$!
  wait "$child"
  status=$?
  echo "supervise: '$1' exited with status $status; starting it again in 1 s" >&2
  sleep 1 &
  wait $!
done
