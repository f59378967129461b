"""Calendar-aligned budget periods, in UTC."""

from datetime import UTC, datetime, timedelta

PERIODS = ("none", "daily", "weekly", "monthly")


def period_start(now: datetime, period: str) -> datetime | None:
    """The start of the period containing `now` (00:00 UTC; Monday; the 1st)."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day
    if period == "weekly":
        return day - timedelta(days=day.weekday())
    if period == "monthly":
        return day.replace(day=1)
    return None


def next_period_start(now: datetime, period: str) -> datetime | None:
    """The next boundary strictly after `now`; None when the team has no period."""
    start = period_start(now, period)
    if start is None:
        return None
    if period == "daily":
        return start + timedelta(days=1)
    if period == "weekly":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def next_reset(*, started_at: datetime | None, now: datetime, period: str) -> datetime | None:
    """When the account's next budget reset is due: the boundary after the period it is in.

    An account whose first period has not been started yet (a new team, or a team that just
    got a period: the reset task has not run) is about to start the period containing `now`,
    so its next reset is the boundary after `now`, never the start of the current period,
    which is in the past. While a started account's reset is pending (the boundary just
    crossed) this is that boundary, for seconds at most."""
    if period not in PERIODS or period == "none":
        return None
    if started_at is None or started_at > now:
        return next_period_start(now, period)
    return next_period_start(started_at, period)
