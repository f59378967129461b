# syntax=docker/dockerfile:1
# Tollgate's image: one image, four commands (docker-compose.yml, deploy/k8s/base/):
#   web      uvicorn saas.asgi:application --host 0.0.0.0 --port 8000 --loop uvloop \
#              --http saas.server:HttpToolsProtocolWithDeadlines
#   worker   celery -A saas worker
#   beat     celery -A saas beat (exactly one)
#   migrate  python manage.py migrate --noinput   (scripts/docker-first-start.sh also makes
#            the first panel admin and, with DEMO=1, the demo tenant)
#
# The base image is pinned to an exact version tag, the Python the lock was compiled and
# tested for (3.11). Pin its digest too: digests cannot be resolved from the machine this was
# written on, so fill in PYTHON_DIGEST below from `docker buildx imagetools inspect
# python:3.11.14-slim-bookworm` (or build with --build-arg PYTHON_IMAGE=python:...@sha256:...).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
# PYTHON_DIGEST: sha256:<fill in>  (then use PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<it>)

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
# Exactly the locked versions, every file checked against its hash; wheels only, so the
# runtime stage needs no compiler.
COPY requirements/runtime.lock /tmp/runtime.lock
RUN /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r /tmp/runtime.lock

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH PYTHONPATH=/app \
    DJANGO_SETTINGS_MODULE=saas.settings PORT=8000
RUN groupadd --system --gid 10001 tollgate \
 && useradd --system --uid 10001 --gid tollgate --home-dir /app --shell /usr/sbin/nologin tollgate \
 && install -d -o tollgate -g tollgate -m 0700 /var/lib/tollgate
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The build context has no .env, .venv or .git (.dockerignore, checked by
# tests/test_deploy_files.py). The code stays root-owned: the app cannot rewrite itself.
COPY . /app
# settings.py reads /app/.env; here it is a link into /var/lib/tollgate, where the compose
# stack's init service writes generated secrets (a volume). Without that volume (Kubernetes:
# secrets in the environment) the link leads nowhere and nothing is read.
RUN ln -s /var/lib/tollgate/tollgate.env /app/.env \
 && python -m compileall -q /app
# No collectstatic: core/static.py serves the staticfiles finders' files from memory.
USER tollgate
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "scripts/healthcheck.py", "web"]
CMD ["uvicorn", "saas.asgi:application", "--host", "0.0.0.0", "--port", "8000", \
     "--loop", "uvloop", "--http", "saas.server:HttpToolsProtocolWithDeadlines", \
     "--no-access-log", \
     "--proxy-headers", "--timeout-graceful-shutdown", "20"]
