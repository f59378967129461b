"""Typed snapshots of what the gateway reads: a key, a team and its pricing.

The control plane builds them from its rows (mirrors/gateway.py) and publishes `to_json()`;
every gateway reads them back with `from_json()`. The JSON field names are the wire format
(livestate/keys.py lists the hashes that hold them), so a field is renamed on both sides at
once or not at all. What the hot path derives from a snapshot (its Redis key names, limits with
-1 for none, the `hard` flag, the compiled redaction pattern) is computed once, when the
snapshot is built, never per call.
"""

import re
from dataclasses import dataclass, field, fields
from functools import cache
from typing import Any, Self

import orjson

from livestate.keys import (
    acct_key,
    inflight_key,
    job_key,
    key_fields,
    key_rate_key,
    open_jobs_key,
    parallel_key,
    shard_of,
    team_rate_key,
    usage_stream,
)

# A team's pricing modes (teams.models.Team.PricingMode holds the same values).
MODEL_PRICES = "model_prices"
COST_MARKUP = "cost_markup"
PER_TOKENS = "per_tokens"
PER_JOB = "per_job"


def limit(value: int | None) -> int:
    """A limit as the scripts take it: -1 for none."""
    return -1 if value is None else int(value)


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # derived fields of a frozen dataclass, set once


@cache
def _wire_names(cls) -> tuple[str, ...]:
    """The fields a snapshot publishes: those it is built with, not those it derives."""
    return tuple(f.name for f in fields(cls) if f.init)


def _to_wire(value: Any) -> Any:
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, TeamPricing):
        return value.to_wire()
    return value


class _Published:
    """JSON in and out for a snapshot dataclass: its init fields are the wire format."""

    __slots__ = ()

    def to_json(self) -> bytes:
        return orjson.dumps({n: _to_wire(getattr(self, n)) for n in _wire_names(type(self))})

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        data = orjson.loads(raw)
        return cls(**{n: data.get(n) for n in _wire_names(cls)})


def _derived():
    return field(init=False, repr=False, compare=False)


def _wire(*values) -> tuple[bytes, ...]:
    """Script arguments encoded once, as the Redis client would on every call."""
    return tuple(v if isinstance(v, bytes) else str(v).encode() for v in values)


@dataclass(frozen=True, slots=True)
class _Limited(_Published):
    """What keys and teams both derive: their rate-counter hash and limits."""

    rate_key: str = _derived()
    # What ADMIT and SETTLE take from this snapshot, in their order (livestate/scripts.py),
    # encoded once: the scripts' constant arguments.
    script_args: tuple[bytes, ...] = _derived()
    rpm_limit: int = _derived()  # -1 for none, like the other limits
    tpm_limit: int = _derived()
    budget_limit: int = _derived()


def _derive_limits(snapshot, rate_key: str) -> None:
    """The rate-counter hash and the limits (-1 for none) shared by keys and teams."""
    _set(snapshot, "groups", frozenset(snapshot.groups))
    _set(snapshot, "rate_key", rate_key)
    _set(snapshot, "rpm_limit", limit(snapshot.rpm))
    _set(snapshot, "tpm_limit", limit(snapshot.tpm))
    _set(snapshot, "budget_limit", limit(snapshot.budget))


@dataclass(frozen=True, slots=True)
class TeamPricing:
    """How a team is charged. Units: per_usd and unit_price are micro-credits per USD and per
    `unit_tokens` tokens; job_price and job_prices (job type -> price) are micro-credits."""

    mode: str = MODEL_PRICES
    per_usd: int = 0
    unit_tokens: int = 1
    unit_price: int = 0
    job_price: int = 0
    job_prices: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, raw: dict | None) -> Self:
        # Falsy values fall back to the defaults, as the gateway has always read them.
        raw = raw or {}
        return cls(
            mode=raw.get("mode") or MODEL_PRICES,
            per_usd=raw.get("per_usd") or 0,
            unit_tokens=raw.get("unit_tokens") or 1,
            unit_price=raw.get("unit_price") or 0,
            job_price=raw.get("job_price") or 0,
            job_prices=raw.get("job_prices") or {},
        )

    def to_wire(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def per_job(self) -> bool:
        return self.mode == PER_JOB


@dataclass(frozen=True, slots=True)
class KeySnapshot(_Limited):
    """A virtual key as the gateway authenticates and admits it."""

    id: int
    public_id: str
    team: int
    hash: str  # sha256 hex of the secret
    prev_hash: str | None  # the secret before a rotation, accepted until prev_until
    prev_until: float | None  # unix time
    status: str
    expires: float | None  # unix time
    groups: frozenset[str]  # model group public ids; empty = every group of the team
    rpm: int | None
    tpm: int | None
    budget: int | None  # micro-credits, None = no key budget
    # Derived once in __post_init__: the key's fields in its team's account hash.
    spent_field: str = _derived()
    reserved_field: str = _derived()

    def __post_init__(self) -> None:
        _derive_limits(self, key_rate_key(self.team, self.id))
        spent, reserved = key_fields(self.id)
        _set(self, "spent_field", spent)
        _set(self, "reserved_field", reserved)
        _set(
            self,
            "script_args",
            _wire(self.rpm_limit, self.tpm_limit, self.budget_limit, spent, reserved),
        )


@dataclass(frozen=True, slots=True)
class TeamSnapshot(_Limited):
    """A team as the gateway admits, prices, caches and logs its calls."""

    id: int
    public_id: str
    org: int
    status: str
    groups: frozenset[str]  # model group public ids the team may use
    rpm: int | None
    tpm: int | None
    par: int | None  # parallel requests in flight
    budget: int | None  # micro-credits per budget period, None = no period budget
    budget_mode: str  # "hard" refuses past the budget; otherwise calls may run over
    overdraft: int  # micro-credits the balance may go below zero
    pricing: TeamPricing
    cache_ttl: int | None  # seconds; None = the model group's TTL, 0 = off
    cache_hit_pct: int  # percent of the full price charged for a cached answer
    log: bool  # keep request and response bodies
    log_days: int | None
    log_patterns: tuple[str, ...]  # the team's own redaction regexes, checked when saved
    # Derived once in __post_init__, with those of _Limited: the names of the team's shard.
    account_key: str = _derived()
    parallel_key: str = _derived()
    inflight_key: str = _derived()
    usage_key: str = _derived()
    open_jobs_key: str = _derived()
    no_job_key: str = _derived()  # what ADMIT and SETTLE declare for a call outside a job
    admit_keys: tuple[bytes, ...] = _derived()  # ADMIT's first KEYS, encoded once
    settle_keys: tuple[bytes, ...] = _derived()  # SETTLE's
    par_limit: int = _derived()
    hard: bool = _derived()
    redact: re.Pattern | None = _derived()  # noqa: RUF009 - a Field, not a shared value

    def __post_init__(self) -> None:
        _derive_limits(self, team_rate_key(self.id))
        _set(self, "log", bool(self.log))
        _set(self, "log_patterns", tuple(self.log_patterns or ()))
        if not isinstance(self.pricing, TeamPricing):
            _set(self, "pricing", TeamPricing.from_wire(self.pricing))
        _set(self, "account_key", acct_key(self.id))
        _set(self, "parallel_key", parallel_key(self.id))
        shard = shard_of(self.id)
        _set(self, "inflight_key", inflight_key(shard))
        _set(self, "usage_key", usage_stream(shard))
        _set(self, "open_jobs_key", open_jobs_key(shard))
        _set(self, "no_job_key", job_key(self.id, ""))
        head = _wire(self.account_key, self.parallel_key, self.inflight_key)
        _set(self, "admit_keys", head)
        _set(self, "settle_keys", (*head, self.usage_key.encode()))
        _set(self, "par_limit", limit(self.par))
        _set(self, "hard", self.budget_mode == "hard")
        _set(
            self,
            "script_args",
            _wire(
                self.rpm_limit,
                self.tpm_limit,
                self.par_limit,
                self.overdraft,
                self.budget_limit,
                "1" if self.hard else "0",
                self.id,
            ),
        )
        patterns = self.log_patterns
        _set(
            self,
            "redact",
            re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None,
        )
