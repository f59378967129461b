"""What the ledger has posted for a team's gateway calls."""

from django.db.models import Sum


def posted_calls(team) -> int:
    """How many of the team's calls its usage entries have charged, checked against the calls'
    records. The settler posts a batch's newly recorded calls of one team as one entry
    (metadata["calls"] counts them; an entry without it is one call), so the entries must add
    up to the charged records' prices, each record once."""
    from billing.models import LedgerEntry, UsageRecord

    entries = LedgerEntry.objects.filter(account__team=team, kind=LedgerEntry.Kind.USAGE)
    charged = UsageRecord.objects.filter(team=team, price_micros__gt=0)
    debited = -(entries.aggregate(s=Sum("amount_micros"))["s"] or 0)
    uncollected = sum(e.metadata.get("uncollected_micros", 0) for e in entries)
    assert debited + uncollected >= (charged.aggregate(s=Sum("price_micros"))["s"] or 0)
    calls = sum(e.metadata.get("calls", 1) for e in entries)
    assert calls == charged.count()
    return calls


def debit_of(request_id: str):
    """The one usage entry that debited a call, checked to debit exactly the calls it names."""
    from billing.models import LedgerEntry

    entry = LedgerEntry.objects.get(kind=LedgerEntry.Kind.USAGE, calls__request_id=request_id)
    assert -entry.amount_micros == entry.calls.aggregate(s=Sum("price_micros"))["s"]
    return entry
