"""The gateway's one door to the control plane's database, never on a call's path.

A few rare calls go through it, each in a worker thread with its own connection: the republish
when the gateway starts on (or finds) an empty Redis, the on-demand rebuild of a team's account
Redis lost, the audit event for usage records replayed after such a loss, and a job whose Redis
copy has been retired. Nothing else in proxy/ imports a model, a service or a mirror
(import-linter enforces it).
"""

from django.db import connection


def publish_all() -> None:
    """Empty Redis (first start, or flushed): rebuild every snapshot from Postgres once."""
    from mirrors.gateway import publish_all

    try:
        publish_all()
    finally:
        connection.close()  # a worker thread's connection; nothing else will close it


def rebuild_account(team_id: int) -> bool:
    """Redis lost this team's account (ADMIT said not_ready): build it from Postgres now, with
    its unsettled usage counted, instead of at the next reconcile. False: no such team."""
    from billing.models import CreditAccount
    from mirrors.gateway import rebuild_account

    try:
        account = CreditAccount.objects.filter(team_id=team_id).first()
        if account is None:
            return False
        rebuild_account(account)
        return True
    finally:
        connection.close()


def report_replayed(*, replayed: int, deferred: int, instance: str) -> None:
    """Audit what the gateway wrote again after Redis lost its data (or was down)."""
    from orgs.services import audit_system_event

    try:
        audit_system_event(
            actor="system:gateway",
            action="usage.replayed",
            object_type="gateway",
            object_id=instance,
            changes={
                "replayed_records": [None, replayed],
                "deferred_settlements": [None, deferred],
            },
        )
    finally:
        connection.close()


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
