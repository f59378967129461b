"""The catalog's, keys' and webhooks' rules (modelgroups/, teams/, alerts/rules.py) hold at
the service, with no API or form in front."""

import pytest

from alerts.services import webhook_endpoint_create
from core.errors import ValidationFailed
from modelgroups import rules
from modelgroups import services as catalog
from teams.services import key_create, key_rotate
from tests.helpers.tenants import db_state


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([], "Pick at least one model."),
        (["gpt-a", "gpt-a"], "gpt-a is listed twice."),
    ],
)
def test_a_model_group_needs_its_models_each_once(catalog_objects, members, message):
    models = {"gpt-a": catalog_objects["primary"]}
    before = db_state()
    with pytest.raises(ValidationFailed) as refused:
        catalog.model_group_create(
            actor="test", name="g", members=[{"model": models[m]} for m in members]
        )
    assert refused.value.fields == {"models": [message]}
    assert db_state() == before


@pytest.mark.parametrize(
    ("call", "fields", "field"),
    [
        ("model_group_create", {"name": "g", "cache_ttl_seconds": 0}, "cache_ttl_seconds"),
        ("model_group_create", {"name": "g", "members_weight": 1001}, "models"),
        (
            "upstream_create",
            {"name": "u", "base_url": "http://x/v1", "read_timeout_seconds": 0},
            "read_timeout_seconds",
        ),
        (
            "upstream_create",
            {"name": "u", "base_url": "http://x/v1", "key_mode": "caller"},
            "key_mode",
        ),
        (
            "model_create",
            {"name": "m", "upstream_model": "x", "context_window": 0},
            "context_window",
        ),
    ],
)
def test_catalog_services_refuse_settings_outside_the_bounds(catalog_objects, call, fields, field):
    fields = dict(fields)
    if call == "model_group_create":
        weight = fields.pop("members_weight", 1)
        fields["members"] = [{"model": catalog_objects["primary"], "weight": weight}]
    if call == "model_create":
        fields["upstream"] = catalog_objects["upstream"]
    before = db_state()
    with pytest.raises(ValidationFailed) as refused:
        getattr(catalog, call)(actor="test", **fields)
    assert field in refused.value.fields
    assert db_state() == before


def test_bounds_are_what_serializer_and_form_fields_take():
    assert rules.bounds("weight") == {"min_value": 1, "max_value": 1000}
    assert rules.bounds("connect_timeout_seconds") == {"min_value": 0.1, "max_value": 60}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"url": "javascript:alert(1)"}, "url"),
        ({"url": "ftp://h.example/t"}, "url"),
        ({"url": "https://h.example/" + "x" * 500}, "url"),
        ({"url": "https://h.example/t", "description": "d" * 201}, "description"),
    ],
)
def test_webhook_services_refuse_what_could_not_be_delivered(tenant_a, data, field):
    before = db_state()
    with pytest.raises(ValidationFailed) as refused:
        webhook_endpoint_create(actor="test", organization=tenant_a.org, **data)
    assert field in refused.value.fields
    assert db_state() == before


def test_key_services_refuse_limits_outside_the_teams_bounds(tenant_a):
    before = db_state()
    with pytest.raises(ValidationFailed) as refused:
        key_create(actor="test", team=tenant_a.team, name="k", rpm_limit=0)
    assert "rpm_limit" in refused.value.fields
    with pytest.raises(ValidationFailed) as refused:
        key_rotate(actor="test", key=tenant_a.key, grace_seconds=31 * 86400)
    assert "grace_period_seconds" in refused.value.fields
    assert db_state() == before
