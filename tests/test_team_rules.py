"""A team's settings rules (teams/rules.py) hold at the service, with no API or form in front:
a command or an importer cannot store what the gateway would choke on."""

import pytest

from core.errors import ValidationFailed
from proxy import jobs
from teams import rules
from teams.models import Team
from teams.services import team_create, team_update
from tests.helpers.tenants import db_state

DAYS_30 = 30 * 86400


def refusal(call, **kwargs) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        call(**kwargs)
    return caught.value


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"log_redact_patterns": ["(unclosed"]}, "log_redact_patterns"),
        ({"log_redact_patterns": ["ok", ".*"]}, "log_redact_patterns"),
        ({"log_redact_patterns": ["a\x00b"]}, "log_redact_patterns"),
        ({"log_redact_patterns": ["x"] * 51}, "log_redact_patterns"),
        ({"log_redact_patterns": "sk-.*"}, "log_redact_patterns"),
        ({"cache_ttl_seconds": DAYS_30 + 1}, "cache_ttl_seconds"),
        ({"cache_ttl_seconds": -1}, "cache_ttl_seconds"),
        ({"cache_hit_price_percent": 101}, "cache_hit_price_percent"),
        ({"cache_hit_price_percent": None}, "cache_hit_price_percent"),
        ({"log_retention_days": 0}, "log_retention_days"),
        ({"log_retention_days": 3651}, "log_retention_days"),
        ({"rpm_limit": 0}, "rpm_limit"),
        ({"tpm_limit": 2**31}, "tpm_limit"),
        ({"max_parallel_requests": True}, "max_parallel_requests"),
        ({"alert_thresholds": [80] * 11}, "alert_thresholds"),
        ({"alert_thresholds": [0]}, "alert_thresholds"),
        ({"alert_thresholds": [1001]}, "alert_thresholds"),
        ({"job_type_prices": {"bad type!": 1}}, "job_type_prices"),
        ({"job_type_prices": {"translate": -1}}, "job_type_prices"),
        ({"job_type_prices": {f"t{i}": 1 for i in range(201)}}, "job_type_prices"),
        ({"budget_limit_micros": -1}, "budget_limit"),
        ({"allowance_micros": 5}, "allowance"),  # no budget period to recur on
        ({"pricing_mode": "per_job"}, "job_price"),
    ],
)
def test_team_create_refuses_a_setting_outside_the_rules(tenant_a, fields, field):
    # given
    before = db_state()
    # when
    error = refusal(team_create, actor="test", organization=tenant_a.org, name="new", **fields)
    # then the field is named as the API names it, and nothing was written
    assert field in error.fields, error.fields
    assert db_state() == before


def test_team_update_refuses_a_pattern_the_gateway_could_not_compile(tenant_a):
    before = db_state()
    error = refusal(
        team_update, actor="test", team=tenant_a.team, data={"log_redact_patterns": ["["]}
    )
    assert error.fields["log_redact_patterns"][0].startswith(
        "Pattern 1 is not a valid regular expression"
    )
    assert db_state() == before


def test_team_update_checks_the_pricing_mode_against_the_team_as_it_will_be(tenant_a):
    # given a per-job team
    team_update(
        actor="test",
        team=tenant_a.team,
        data={"pricing_mode": Team.PricingMode.PER_JOB, "job_price_micros": 500_000},
    )
    # when only its job price is cleared, then the mode it keeps refuses it
    error = refusal(team_update, actor="test", team=tenant_a.team, data={"job_price_micros": None})
    assert error.fields == {"job_price": ["Required when pricing_mode is per_job."]}


def test_settings_within_the_bounds_are_stored(tenant_a):
    team = team_create(
        actor="test",
        organization=tenant_a.org,
        name="edges",
        cache_ttl_seconds=DAYS_30,
        cache_hit_price_percent=100,
        log_retention_days=3650,
        alert_thresholds=list(range(1, 11)),
        log_redact_patterns=[r"\d{16}"],
        job_type_prices={"summarize:v2": 0},
    )
    assert Team.objects.get(pk=team.pk).cache_ttl_seconds == DAYS_30


def test_a_pattern_problem_is_said_as_the_end_of_a_sentence_about_it():
    assert rules.redact_pattern_problem(r"sk-[A-Za-z0-9]+") is None
    assert rules.redact_pattern_problem("a*") == "matches empty text."
    assert rules.redact_pattern_problem("(").startswith("is not a valid regular expression: ")
    assert rules.redact_pattern_problem("x" * 501) == "is longer than 500 characters."


def test_a_job_type_is_one_rule_for_the_gateway_and_the_control_plane():
    assert jobs.JOB_TYPE_RE is rules.JOB_TYPE_RE
    assert rules.job_type_problem("translate.v2:fast") is None
    assert rules.job_type_problem("-leading") is not None
    assert rules.job_type_problem("x" * 101) is not None


def test_bounds_are_what_serializer_and_form_fields_take():
    assert rules.bounds("cache_ttl_seconds") == {"min_value": 0, "max_value": DAYS_30}
    assert rules.bounds("log_retention_days") == {"min_value": 1, "max_value": 3650}
