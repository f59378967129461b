"""Reads behind the logs page, a call's detail and the catalog's health: the panel's own queries
over billing's raw call records (partitioned by month, millions of rows) and modelgroups'
probe verdicts.

The logs page pages by keyset on (created_at, id), newest first: never OFFSET and never a
COUNT over the table, so page 2,000 costs what page 1 does. Every filter the page offers is
served by an index the table already has (see `call_records`), so none was added: the settler
inserts every call on the hot path, and each index would cost each of those inserts.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from django.db.models import Q

from billing.models import USAGE_COUNTS, CallLog, UsageRecord
from modelgroups.models import Model, ModelHealth

PAGE_SIZE = 50
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# How the panel names the separately priced kinds (USAGE_COUNTS' columns) next to the tokens.
COUNT_LABELS = {
    "cache_read_tokens": "cached read",
    "cache_write_tokens": "cache write",
    "reasoning_tokens": "reasoning",
    "audio_input_tokens": "audio in",
    "audio_output_tokens": "audio out",
    "image_count": "images",
    "audio_ms": "audio ms",
    "characters": "characters",
}
assert set(COUNT_LABELS) == set(USAGE_COUNTS.values())


# --- keyset paging on (created_at, id) ---------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """A row's place in the (created_at, id) order, as it travels in a link: "<µs>.<id>"."""

    created_at: datetime
    id: int

    def __str__(self) -> str:
        delta = self.created_at - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return f"{micros}.{self.id}"

    @classmethod
    def of(cls, row) -> "Cursor":
        return cls(row.created_at, row.pk)

    @classmethod
    def parse(cls, text: str | None) -> "Cursor | None":
        """None for anything that is not a cursor this module wrote (a hand-edited link shows
        the first page rather than an error)."""
        micros, _, pk = (text or "").partition(".")
        if not (micros.isdigit() and pk.isdigit() and len(micros) <= 17 and len(pk) <= 18):
            return None
        return cls(_EPOCH + timedelta(microseconds=int(micros)), int(pk))


@dataclass(frozen=True)
class CallPage:
    rows: list
    older: str | None  # the cursor of the page below (the last row), if there are older rows
    newer: str | None  # the cursor of the page above (the first row), if there are newer rows


def _before(c: Cursor) -> Q:
    # `created_at <= t` alone is what an index on created_at can range over; the OR settles
    # the rows of equal timestamps by id.
    return Q(created_at__lte=c.created_at) & (
        Q(created_at__lt=c.created_at) | Q(created_at=c.created_at, id__lt=c.id)
    )


def _after(c: Cursor) -> Q:
    return Q(created_at__gte=c.created_at) & (
        Q(created_at__gt=c.created_at) | Q(created_at=c.created_at, id__gt=c.id)
    )


def page_query(queryset, *, older_than=None, newer_than=None, size: int | None = None):
    """The one query behind a page: size + 1 rows from the cursor on, in the cursor's
    direction (oldest first above `newer_than`, newest first otherwise)."""
    size = size or PAGE_SIZE
    if newer_than is not None:
        return queryset.filter(_after(newer_than)).order_by("created_at", "id")[: size + 1]
    if older_than is not None:
        queryset = queryset.filter(_before(older_than))
    return queryset.order_by("-created_at", "-id")[: size + 1]


def call_page(queryset, *, older_than=None, newer_than=None, size: int | None = None) -> CallPage:
    """`size` calls newest first: below `older_than`, above `newer_than`, or the newest ones.
    One query whichever page it is."""
    size = size or PAGE_SIZE
    rows = list(page_query(queryset, older_than=older_than, newer_than=newer_than, size=size))
    more = len(rows) > size
    rows = rows[:size]
    if newer_than is not None:
        rows.reverse()
        return CallPage(
            rows,
            # Came from an older page, so there is one (the row the cursor names, at least).
            older=str(Cursor.of(rows[-1])) if rows else str(newer_than),
            newer=str(Cursor.of(rows[0])) if rows and more else None,
        )
    newer = None
    if older_than is not None:
        # Came from a newer page, so there is one (the row the cursor names, at least).
        newer = str(Cursor.of(rows[0])) if rows else str(older_than)
    return CallPage(rows, older=str(Cursor.of(rows[-1])) if more else None, newer=newer)


def call_records(*, start=None, end=None, request_id: str = "", **scope):
    """The calls matching the logs page's filters. The index each one uses:

    request id -> usage_record_unique_call (request_id, created_at), any time range;
    team -> (team, created_at); organization -> (organization, created_at); key -> key_id;
    otherwise (model, model group, status, or nothing) -> created_at, read backwards through
    the time range and stopping once a page is full. A model, group or status filter adds no
    index of its own: the time range bounds the scan, and each index would cost every settled
    call an insert (tests/panel/test_panel_logs.py checks the plans)."""
    records = UsageRecord.objects.select_related("team", "key", "organization")
    if request_id:
        # A lookup is exact and across all time: a customer quotes it from any day.
        return records.filter(request_id=request_id)
    if start is not None:
        records = records.filter(created_at__gte=start)
    if end is not None:
        records = records.filter(created_at__lt=end)
    return records.filter(**scope)


# --- one call ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallDetail:
    record: UsageRecord
    log: CallLog | None  # the team's compliance log of the bodies, when it keeps one
    counts: list  # (label, value) of the nonzero separately priced kinds
    request_text: str  # the logged request, pretty-printed when it is JSON
    response_text: str  # the logged response, pretty-printed when it is JSON
    stream_text: str | None  # a chat stream's deltas joined: what the client saw


def token_counts(record) -> list[tuple[str, int]]:
    return [
        (label, getattr(record, column))
        for column, label in COUNT_LABELS.items()
        if getattr(record, column)
    ]


def call_detail(*, request_id: str) -> CallDetail | None:
    record = (
        UsageRecord.objects.select_related("team__organization", "key", "job")
        .filter(request_id=request_id)
        .order_by("-created_at")
        .first()
    )
    if record is None:
        return None
    log = CallLog.objects.filter(request_id=request_id).first()
    return CallDetail(
        record=record,
        log=log,
        counts=token_counts(record),
        request_text=_pretty(log.request_body) if log else "",
        response_text=_pretty(log.response_body) if log else "",
        stream_text=stream_text(log.response_body) if log else None,
    )


def _pretty(text: str) -> str:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def stream_text(body: str) -> str | None:
    """The text a client saw of a streamed chat answer: the `data:` lines' chunks, their
    delta contents joined (Anthropic's text deltas too). None when the body is not such a
    stream, so the page shows it raw instead."""
    parts: list[str] = []
    frames = 0
    for line in body.splitlines():
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]" or not payload:
            continue
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None  # cut short or not ours: the raw body says more
        if not isinstance(chunk, dict):
            return None
        if chunk.get("object") == "chat.completion.chunk":
            frames += 1
            for choice in chunk.get("choices") or []:
                content = ((choice or {}).get("delta") or {}).get("content")
                if isinstance(content, str):
                    parts.append(content)
        elif chunk.get("type") == "content_block_delta":
            frames += 1
            delta = chunk.get("delta") or {}
            if isinstance(delta.get("text"), str):
                parts.append(delta["text"])
        elif chunk.get("type") in ("message_start", "message_delta", "message_stop", "ping"):
            frames += 1
        elif "error" in chunk:
            frames += 1  # the gateway's own error event ends a stream; shown in the raw body
    return "".join(parts) if frames else None


# --- model health --------------------------------------------------------------------------


def models_with_health():
    """Every model with its last probe (`model.health_row`, None while never probed)."""
    models = list(Model.objects.select_related("upstream", "health").order_by("name"))
    for model in models:
        try:
            model.health_row = model.health
        except ModelHealth.DoesNotExist:
            model.health_row = None
    return models


def down_models() -> list[ModelHealth]:
    """Enabled models whose last probe found them down, down the longest first."""
    return list(
        ModelHealth.objects.filter(status=ModelHealth.Status.DOWN, model__enabled=True)
        .select_related("model__upstream")
        .order_by("status_since", "model__name")
    )
