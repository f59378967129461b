"""Snapshots: what the control plane publishes is what the gateway reads back."""

import orjson

from livestate.keys import (
    SHARDS,
    acct_key,
    inflight_key,
    key_fields,
    key_rate_key,
    parallel_key,
    team_rate_key,
    usage_stream,
)
from livestate.snapshots import KeySnapshot, TeamPricing, TeamSnapshot
from tests.helpers.gateway_state import key_snapshot, team_snapshot

# The wire format the gateway has always read (mirrors/gateway.py writes it).
KEY_WIRE_FIELDS = {
    "id", "public_id", "team", "hash", "prev_hash", "prev_until", "status", "expires",
    "groups", "rpm", "tpm", "budget",
}  # fmt: skip
TEAM_WIRE_FIELDS = {
    "id", "public_id", "org", "status", "groups", "rpm", "tpm", "par", "budget",
    "budget_mode", "overdraft", "pricing", "cache_ttl", "cache_hit_pct", "log", "log_days",
    "log_patterns",
}  # fmt: skip


def test_a_key_snapshot_survives_the_round_trip_with_its_wire_names():
    key = key_snapshot(groups=frozenset({"grp_b", "grp_a"}), rpm=60, budget=5_000_000)
    wire = orjson.loads(key.to_json())
    assert set(wire) == KEY_WIRE_FIELDS
    assert wire["groups"] == ["grp_a", "grp_b"]  # sorted: the same rows publish the same bytes
    assert KeySnapshot.from_json(key.to_json()) == key


def test_a_team_snapshot_survives_the_round_trip_with_its_wire_names():
    team = team_snapshot(
        pricing=TeamPricing(mode="per_job", job_price=9, job_prices={"summarize": 4}),
        log=True,
        log_patterns=("[0-9]{3}-[0-9]{2}",),
    )
    wire = orjson.loads(team.to_json())
    assert set(wire) == TEAM_WIRE_FIELDS
    assert wire["pricing"]["job_prices"] == {"summarize": 4}
    assert wire["log_patterns"] == ["[0-9]{3}-[0-9]{2}"]
    back = TeamSnapshot.from_json(team.to_json())
    assert back == team
    assert back.pricing.per_job


def test_the_hot_path_values_are_derived_once_from_the_snapshot():
    key = key_snapshot(id=11, team=5, rpm=60, tpm=None, budget=0)
    assert (key.spent_field, key.reserved_field) == key_fields(11)
    assert key.rate_key == key_rate_key(5, 11)
    # -1 is "no limit" for the scripts; 0 is a limit of zero
    assert (key.rpm_limit, key.tpm_limit, key.budget_limit) == (60, -1, 0)
    team = team_snapshot(id=5, par=4, budget=None, budget_mode="hard")
    assert team.account_key == acct_key(5)
    assert team.parallel_key == parallel_key(5)
    assert team.rate_key == team_rate_key(5)
    assert (team.inflight_key, team.usage_key) == (
        inflight_key(5 % SHARDS),
        usage_stream(5 % SHARDS),
    )
    assert (team.par_limit, team.budget_limit, team.hard) == (4, -1, True)
    assert team_snapshot(budget_mode="soft").hard is False


def test_redaction_patterns_compile_into_one_regex():
    team = team_snapshot(log=True, log_patterns=("secret-[a-z]+", "[0-9]{4}"))
    assert team.redact.sub("#", "a secret-abc and 1234") == "a # and #"
    assert team_snapshot().redact is None


def test_a_snapshot_published_before_pricing_existed_reads_with_defaults():
    # given: an older team snapshot, without pricing and logging fields
    wire = orjson.loads(team_snapshot(groups=frozenset({"grp_a"})).to_json())
    for name in ("pricing", "log", "log_days", "log_patterns"):
        del wire[name]
    raw = orjson.dumps(wire)
    # when
    team = TeamSnapshot.from_json(raw)
    # then
    assert team.pricing == TeamPricing()
    assert team.log is False
    assert team.log_patterns == ()
    assert team.groups == frozenset({"grp_a"})


def test_falsy_pricing_values_read_as_the_defaults():
    pricing = TeamPricing.from_wire({"mode": None, "unit_tokens": 0, "job_prices": None})
    assert pricing == TeamPricing()
    assert pricing.unit_tokens == 1
