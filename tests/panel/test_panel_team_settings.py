"""The newer team settings (pricing, response cache, compliance logging, low balance alert) and
a model group's cache, edited in the panel through the same services and rules as the API."""

from django.urls import reverse

from modelgroups.models import ModelGroup
from orgs.models import AuditEvent
from teams.models import Team
from tests.helpers.tenants import db_state


def edit_data(client, team, **changes) -> dict:
    """The team's settings form as a browser would send it back, with some fields changed."""
    form = client.get(reverse("panel:team_edit", args=[team.public_id])).context["form"]
    data = {}
    for name, field in form.fields.items():
        value = field.prepare_value(form.initial.get(name))
        if value is None or value is False:
            continue  # an empty input, an unticked box
        data[name] = "on" if value is True else value
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def post_edit(client, team, **changes):
    return client.post(
        reverse("panel:team_edit", args=[team.public_id]), edit_data(client, team, **changes)
    )


def test_the_form_sent_back_unchanged_changes_nothing(as_admin, tenant_a):
    before = db_state()
    response = post_edit(as_admin, tenant_a.team)
    assert response.status_code == 302
    assert db_state() == before


def test_pricing_cache_logging_and_low_balance_are_saved_and_audited(as_admin, tenant_a):
    # when
    response = post_edit(
        as_admin,
        tenant_a.team,
        pricing_mode="per_job",
        job_price="0.50",
        job_type_prices="translate = 2\nsummarize=0.25\n",
        cache_ttl_seconds="600",
        cache_hit_price_percent="10",
        log_bodies="on",
        log_retention_days="7",
        log_redact_patterns="sk-[A-Za-z0-9]+\n\\d{16}",
        low_balance_alert="5",
    )
    # then
    assert response.status_code == 302
    team = Team.objects.get(pk=tenant_a.team.pk)
    assert (team.pricing_mode, team.job_price_micros) == ("per_job", 500_000)
    assert team.job_type_prices == {"translate": 2_000_000, "summarize": 250_000}
    assert (team.cache_ttl_seconds, team.cache_hit_price_percent) == (600, 10)
    assert (team.log_bodies, team.log_retention_days) == (True, 7)
    assert team.log_redact_patterns == ["sk-[A-Za-z0-9]+", "\\d{16}"]
    assert team.low_balance_alert_micros == 5_000_000
    event = AuditEvent.objects.get(action="team.update")
    assert event.actor == "user:alice"
    assert set(event.changes) == {
        "pricing_mode",
        "job_price_micros",
        "job_type_prices",
        "cache_ttl_seconds",
        "cache_hit_price_percent",
        "log_bodies",
        "log_retention_days",
        "log_redact_patterns",
        "low_balance_alert_micros",
    }
    # and the team page and the form show them back
    page = as_admin.get(reverse("panel:team_detail", args=[team.public_id])).content.decode()
    assert "Per Job: 0.50 credits per completed job" in page
    assert "<code>translate</code> 2.00" in page and "600 s" in page
    assert "bodies kept 7 days, 2 redaction patterns" in page and "below 5.00" in page
    form = as_admin.get(reverse("panel:team_edit", args=[team.public_id])).content.decode()
    assert "summarize = 0.25\ntranslate = 2" in form


def test_a_pricing_mode_without_its_parameters_is_refused_next_to_them(as_admin, tenant_a):
    # given
    before = db_state()
    # when
    response = post_edit(as_admin, tenant_a.team, pricing_mode="per_tokens")
    # then the service's rule shows on each missing field
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert errors["tokens_per_unit"] == ["Required when pricing_mode is per_tokens."]
    assert errors["price_per_unit"] == ["Required when pricing_mode is per_tokens."]
    assert b'id="id_tokens_per_unit_error"' in response.content
    assert db_state() == before
    # when the parameters are given
    response = post_edit(
        as_admin,
        tenant_a.team,
        pricing_mode="per_tokens",
        tokens_per_unit="1000",
        price_per_unit="0.002",
    )
    # then
    assert response.status_code == 302
    team = Team.objects.get(pk=tenant_a.team.pk)
    assert (team.tokens_per_unit, team.price_per_unit_micros) == (1000, 2000)


def test_bad_values_are_field_errors_and_change_nothing(as_admin, tenant_a):
    before = db_state()
    cases = {
        "job_type_prices": ("bad type! = 1", "is not a job type"),
        "cache_hit_price_percent": ("101", "less than or equal to 100"),
        "cache_ttl_seconds": ("-1", "greater than or equal to 0"),
        "log_retention_days": ("0", "greater than or equal to 1"),
        "credits_per_usd": ("1.0000001", "at most 6 decimal places"),
    }
    for field, (value, message) in cases.items():
        response = post_edit(as_admin, tenant_a.team, **{field: value})
        assert response.status_code == 200, field
        assert message in response.context["form"].errors[field][0], field
    for patterns, message in [
        ("(unclosed", "Pattern 1 is not a valid regular expression"),
        ("ok\n.*", "Pattern 2 matches empty text."),
        ("a\x00b", "Patterns may not contain NUL characters."),
    ]:
        response = post_edit(as_admin, tenant_a.team, log_redact_patterns=patterns)
        assert response.context["form"].errors["log_redact_patterns"][0].startswith(message)
    response = post_edit(as_admin, tenant_a.team, job_type_prices="translate = lots")
    assert response.context["form"].errors["job_type_prices"] == [
        "Line 1: 'lots' is not a decimal amount such as \"12.50\"."
    ]
    assert db_state() == before


def test_a_new_team_can_be_priced_at_cost_with_a_markup(as_admin, tenant_a):
    response = as_admin.post(
        reverse("panel:team_create"),
        {
            "organization": tenant_a.org.public_id,
            "name": "Marked up",
            "budget_period": "none",
            "budget_mode": "hard",
            "pricing_mode": "cost_markup",
            "credits_per_usd": "1.5",
        },
    )
    assert response.status_code == 302
    team = Team.objects.get(name="Marked up")
    assert (team.pricing_mode, team.credits_per_usd_micros) == ("cost_markup", 1_500_000)
    # the defaults of what was left empty
    assert (team.cache_ttl_seconds, team.cache_hit_price_percent) == (None, 0)
    assert (team.log_bodies, team.log_retention_days, team.log_redact_patterns) == (False, 30, [])


def test_a_model_group_caches_answers_for_what_the_editor_says(as_admin, catalog_objects):
    group = catalog_objects["group"]
    url = reverse("panel:group_edit", args=[group.public_id])
    members = {
        "members-TOTAL_FORMS": "1",
        "members-INITIAL_FORMS": "0",
        "members-0-model": catalog_objects["primary"].pk,
    }
    # when
    response = as_admin.post(url, {"name": "fast", "cache_ttl_seconds": "300", **members})
    # then
    assert response.status_code == 302
    assert ModelGroup.objects.get(pk=group.pk).cache_ttl_seconds == 300
    event = AuditEvent.objects.get(action="model_group.update")
    assert event.actor == "user:alice" and event.changes["cache_ttl_seconds"] == [None, 300]
    assert b"300 s" in as_admin.get(reverse("panel:group_list")).content
    # and zero is not a duration (empty turns the cache off)
    refused = as_admin.post(url, {"name": "fast", "cache_ttl_seconds": "0", **members})
    assert refused.status_code == 200
    assert refused.context["form"].errors["cache_ttl_seconds"] == [
        "Ensure this value is greater than or equal to 1."
    ]
