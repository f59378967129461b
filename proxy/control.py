"""The gateway's one door to the control plane's database, never on a call's path.

Two rare reads go through it, each in a worker thread with its own connection: the republish
when the gateway starts on an empty Redis, and a job whose Redis copy has been retired. Nothing
else in proxy/ imports a model, a service or a mirror (import-linter enforces it).
"""

from django.db import connection


def publish_all() -> None:
    """Empty Redis (first start, or flushed): rebuild every snapshot from Postgres once."""
    from mirrors.gateway import publish_all

    try:
        publish_all()
    finally:
        connection.close()  # a worker thread's connection; nothing else will close it


def settled_job(team_id: int, job_id: str) -> dict | None:
    """A job's settled Postgres row as {job_type, status, metadata, created, closed, totals,
    fee}, or None: for a job whose Redis copy has been retired."""
    from billing.models import Job
    from billing.selectors import job_totals

    try:
        job = Job.objects.filter(team_id=team_id, public_id=job_id).first()
        if job is None:
            return None
        return {
            "job_type": job.job_type,
            "status": job.status,
            "metadata": job.metadata,
            "created": int(job.created_at.timestamp()),
            "closed": int(job.closed_at.timestamp()) if job.closed_at else None,
            "totals": job_totals(job),
            "fee": job.fee_micros,
        }
    finally:
        connection.close()
