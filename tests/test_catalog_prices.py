"""A model's prices for every kind of usage (cached and cache-write input, reasoning and audio
tokens, images, audio seconds, speech characters): set through the admin API, refused when
not an amount, and published to the gateway with every default resolved."""

import pytest

from core.errors import ValidationFailed
from mirrors.gateway import catalog_snapshot
from modelgroups import services
from modelgroups.models import Model, Upstream
from tests.helpers.api import assert_api_error
from tests.helpers.tenants import db_state

BASE = {
    "name": "m-kinds",
    "upstream": "prov",
    "upstream_model": "x-1",
    "input_cost_per_mtok": "2",
    "output_cost_per_mtok": "8",
    "input_price_per_mtok": "3",
    "output_price_per_mtok": "12",
}


def published(model_name: str) -> dict:
    return next(m for m in catalog_snapshot()["models"].values() if m["name"] == model_name)


def create(api, **fields) -> dict:
    response = api.post("/api/models/", {**BASE, **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_model_without_the_new_prices_publishes_its_input_and_output_prices_for_them(
    api, catalog_objects
):
    # when
    body = create(api)
    # then: the API shows the defaults as null (token kinds) or 0 (units)
    assert body["cache_read_price_per_mtok"] is None
    assert body["reasoning_cost_per_mtok"] is None
    assert body["image_price"] == "0.000000" and body["image_prices"] == {}
    # and the gateway sees numbers only, the token kinds those of their side
    m = published("m-kinds")
    assert (m["in_cost"], m["in_price"], m["out_cost"], m["out_price"]) == (
        2_000_000,
        3_000_000,
        8_000_000,
        12_000_000,
    )
    for kind in ("cr", "cw", "ai"):
        assert (m[f"{kind}_cost"], m[f"{kind}_price"]) == (2_000_000, 3_000_000), kind
    for kind in ("rs", "ao"):
        assert (m[f"{kind}_cost"], m[f"{kind}_price"]) == (8_000_000, 12_000_000), kind
    for unit in ("img", "sec", "chr"):
        assert (m[f"{unit}_cost"], m[f"{unit}_price"]) == (0, 0), unit
    assert "img_table" not in m
    assert None not in m.values()


def test_every_price_is_set_and_published_and_a_null_one_follows_its_side_again(
    api, catalog_objects
):
    # given
    body = create(
        api,
        mode="image",
        cache_read_cost_per_mtok="0.2",
        cache_read_price_per_mtok="0.3",
        cache_write_cost_per_mtok="2.5",
        cache_write_price_per_mtok="3.75",
        reasoning_cost_per_mtok="10",
        reasoning_price_per_mtok="15",
        audio_input_cost_per_mtok="40",
        audio_input_price_per_mtok="60",
        audio_output_cost_per_mtok="80",
        audio_output_price_per_mtok="120",
        image_cost="0.04",
        image_price="0.05",
        image_prices={
            "1024x1024|hd": {"cost": "0.08", "price": "0.1"},
            "1792x1024": {"cost": "0.12", "price": "0.15"},
        },
        audio_cost_per_second="0.0001",
        audio_price_per_second="0.00015",
        character_cost_per_mchar="15",
        character_price_per_mchar="22.5",
    )
    assert body["mode"] == "image"
    assert body["cache_write_price_per_mtok"] == "3.750000"
    assert body["image_prices"]["1024x1024|hd"] == {"cost": "0.080000", "price": "0.100000"}
    m = published("m-kinds")
    assert [m[f"{k}_{s}"] for k in ("cr", "cw", "rs", "ai", "ao") for s in ("cost", "price")] == [
        200_000,
        300_000,
        2_500_000,
        3_750_000,
        10_000_000,
        15_000_000,
        40_000_000,
        60_000_000,
        80_000_000,
        120_000_000,
    ]
    assert (m["img_cost"], m["img_price"]) == (40_000, 50_000)
    assert m["img_table"] == {"1024x1024|hd": [80_000, 100_000], "1792x1024": [120_000, 150_000]}
    assert (m["sec_cost"], m["sec_price"]) == (100, 150)
    assert (m["chr_cost"], m["chr_price"]) == (15_000_000, 22_500_000)

    # when: the cached input price is reset to its default and the input price moves
    response = api.patch(
        f"/api/models/{body['id']}/",
        {"cache_read_price_per_mtok": None, "input_price_per_mtok": "4", "image_prices": {}},
        format="json",
    )
    # then
    assert response.status_code == 200, response.content
    assert response.json()["cache_read_price_per_mtok"] is None
    assert Model.objects.get(name="m-kinds").cache_read_price_micros is None
    m = published("m-kinds")
    assert (m["cr_cost"], m["cr_price"], m["cw_price"]) == (200_000, 4_000_000, 3_750_000)
    assert "img_table" not in m


def test_unit_prices_left_out_are_their_cost_times_the_markup(api, catalog_objects, settings):
    settings.DEFAULT_PRICE_MARKUP = 1.5
    body = create(
        api, image_cost="0.04", audio_cost_per_second="0.0002", character_cost_per_mchar="10"
    )
    assert (body["image_price"], body["audio_price_per_second"]) == ("0.060000", "0.000300")
    assert body["character_price_per_mchar"] == "15.000000"


BAD_PRICES = [
    ("cache_read_price_per_mtok", "-1"),
    ("reasoning_cost_per_mtok", 0.5),  # a float: amounts are decimal strings
    ("audio_input_price_per_mtok", True),
    ("image_cost", "0.0000001"),  # past the micro-unit
    ("image_price", "-0.01"),
    ("audio_cost_per_second", ["1"]),
    ("character_price_per_mchar", "lots"),
    ("image_cost", None),  # a cost without a default
    ("image_prices", {"big": {"cost": "1", "price": "1"}}),
    ("image_prices", {"1024x1024|HD!": {"cost": "1", "price": "1"}}),
    ("image_prices", {"1024x1024": {"cost": "1"}}),
    ("image_prices", {"1024x1024": {"cost": "-1", "price": "1"}}),
    ("image_prices", {"1024x1024": {"cost": 0.5, "price": "1"}}),
    ("image_prices", {"1024x1024": "0.04"}),
    ("image_prices", ["1024x1024"]),
    ("image_prices", {f"{64 + i}x64": {"cost": "1", "price": "1"} for i in range(33)}),
]


@pytest.mark.parametrize(("field", "value"), BAD_PRICES)
def test_a_price_that_is_not_an_amount_is_refused_naming_the_field(
    api, catalog_objects, field, value
):
    before = db_state()
    model = catalog_objects["primary"]
    # when: on create and on update
    created = api.post("/api/models/", {**BASE, field: value}, format="json")
    updated = api.patch(f"/api/models/{model.public_id}/", {field: value}, format="json")
    # then
    for response in (created, updated):
        error = assert_api_error(response, 400, "validation_error", with_fields=True)
        assert list(error["fields"]) == [field], error
    assert db_state() == before


def test_the_services_refuse_a_bad_price_whatever_the_entry_point(catalog_objects):
    upstream = catalog_objects["upstream"]
    with pytest.raises(ValidationFailed) as refused:
        services.model_create(
            actor="test", name="m-x", upstream=upstream, upstream_model="x", image_cost_micros=-1
        )
    assert refused.value.fields == {"image_cost": [refused.value.fields["image_cost"][0]]}
    with pytest.raises(ValidationFailed) as refused:
        services.model_update(
            actor="test",
            model=catalog_objects["primary"],
            data={"image_prices": {"1024x1024": {"cost": 1, "price": "1"}}},
        )
    assert "image_prices" in refused.value.fields
    assert not Model.objects.filter(name="m-x").exists()


@pytest.mark.parametrize("mode", ["image", "transcription", "speech", "moderation"])
def test_the_new_modes_are_accepted_and_filterable(api, catalog_objects, mode):
    create(api, mode=mode)
    listed = api.get("/api/models/", {"mode": mode}).json()
    assert [m["name"] for m in listed["results"]] == ["m-kinds"]


def test_an_azure_upstream_needs_its_api_version(api, db):
    before = db_state()
    body = {"name": "az", "kind": "azure_openai", "base_url": "https://x.openai.azure.com"}
    # when: without one, or with one that is not a version
    missing = api.post("/api/upstreams/", body, format="json")
    garbled = api.post("/api/upstreams/", {**body, "api_version": "2024 10?"}, format="json")
    # then
    for response in (missing, garbled):
        error = assert_api_error(response, 400, "validation_error", with_fields=True)
        assert list(error["fields"]) == ["api_version"]
    assert db_state() == before
    # and with one, it is stored and published
    created = api.post("/api/upstreams/", {**body, "api_version": "2024-10-21"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["api_version"] == "2024-10-21"
    assert catalog_snapshot()["upstreams"][created.json()["id"]]["api_version"] == "2024-10-21"


def test_an_upstream_turned_azure_without_a_version_is_refused(api, catalog_objects):
    upstream = catalog_objects["upstream"]
    response = api.patch(
        f"/api/upstreams/{upstream.public_id}/", {"kind": "azure_openai"}, format="json"
    )
    assert_api_error(response, 400, "validation_error", with_fields=True)
    upstream.refresh_from_db()
    assert upstream.kind == Upstream.Kind.OPENAI


def test_an_anthropic_upstream_without_a_version_publishes_the_default_one(api, db):
    created = api.post(
        "/api/upstreams/",
        {"name": "claude", "kind": "anthropic", "base_url": "https://api.anthropic.com/v1"},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["api_version"] == ""
    published_upstream = catalog_snapshot()["upstreams"][created.json()["id"]]
    assert (published_upstream["kind"], published_upstream["api_version"]) == (
        "anthropic",
        "2023-06-01",
    )
