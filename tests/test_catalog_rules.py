"""The catalog's rules (modelgroups/rules.py) hold at the service, with no API or form in front."""

import pytest

from core.errors import ValidationFailed
from modelgroups import rules
from modelgroups import services as catalog
from tests.conftest import db_state


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
