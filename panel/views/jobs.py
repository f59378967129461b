"""Jobs: a team's jobs (the calls made for one business operation) and one job's calls."""

from django.shortcuts import render

from billing import selectors as billing
from billing.models import Job, LedgerEntry, UsageRecord
from panel import selectors
from panel.views.common import by_public_id, param
from teams.models import Team


def team_jobs(request, id):
    team = by_public_id(Team.objects.select_related("organization"), id)
    jobs = Job.objects.filter(team=team).select_related("key")
    status = param(request, "status")
    job_type = param(request, "type", 100)
    if status in Job.Status.values:
        jobs = jobs.filter(status=status)
    if job_type:
        jobs = jobs.filter(job_type=job_type)
    page = selectors.keyset_page(jobs, request.GET.get("cursor"))
    selectors.job_totals_for(page.rows)
    context = {
        "team": team,
        "page": page,
        "status": status,
        "job_type": job_type,
        "statuses": Job.Status.choices,
    }
    return render(request, "panel/job_list.html", context)


def job_detail(request, id):
    job = by_public_id(Job.objects.select_related("team__organization", "key"), id)
    calls = UsageRecord.objects.filter(job=job).select_related("team", "key")
    page = selectors.keyset_page(calls, request.GET.get("cursor"))
    # A flat-priced job's own charge, posted by the settler when the job closed.
    charge = LedgerEntry.objects.filter(idempotency_key=f"job:{job.public_id}").first()
    context = {
        "job": job,
        "team": job.team,
        "totals": billing.job_totals(job),
        "page": page,
        "charge": charge,
    }
    return render(request, "panel/job_detail.html", context)
