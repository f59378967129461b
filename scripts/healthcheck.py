"""Container health checks (the Dockerfile's HEALTHCHECK, docker-compose.yml); exit 0 = healthy.

  healthcheck.py web              GET /health/live on this container's server ($PORT)
  healthcheck.py beat SCHEDULE    beat wrote its schedule file within the last 5 minutes

The worker's check is Celery's own: `celery -A saas inspect ping -d celery@$HOSTNAME`.
Standard library only, so a check costs no Django start-up."""

import glob
import os
import sys
import time
import urllib.request

# Beat saves its schedule at least every 3 minutes (Celery's default sync interval) while it
# runs tasks, and settle-usage runs every second.
BEAT_STALE_SECONDS = 300


def web() -> bool:
    url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health/live"
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def beat(schedule: str) -> bool:
    # shelve may add a suffix (.db, .dat) depending on the dbm module at hand.
    written = [os.path.getmtime(path) for path in glob.glob(glob.escape(schedule) + "*")]
    return bool(written) and time.time() - max(written) < BEAT_STALE_SECONDS


def main() -> int:
    role, *args = sys.argv[1:] or ["web"]
    try:
        healthy = {"web": web, "beat": beat}[role](*args)
    except Exception as exc:  # any failure is "unhealthy", said in one line
        print(f"{role}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
