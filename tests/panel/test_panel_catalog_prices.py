"""The panel's model and upstream forms: the prices beyond input and output in a collapsed
"More prices" section (empty = the default, shown in the field), the new modes and kinds, and
the upstream's API version."""

from django.urls import reverse

from modelgroups.models import Model, Upstream

MODEL = {
    "name": "img-1",
    "upstream_model": "gpt-image-1",
    "mode": "image",
    "input_cost": "2",
    "output_cost": "8",
    "input_price": "3",
    "output_price": "12",
    "max_output_tokens": "100",
    "enabled": "on",
}


def test_a_model_with_more_prices_is_created_and_the_empty_ones_keep_their_defaults(
    as_admin, catalog_objects
):
    # given: the form shows the section, closed, with the new modes
    page = as_admin.get(reverse("panel:model_create"))
    assert b"More prices" in page.content and b'id="more-prices">' in page.content
    assert b'value="transcription"' in page.content
    # when
    response = as_admin.post(
        reverse("panel:model_create"),
        {
            **MODEL,
            "upstream": catalog_objects["upstream"].pk,
            "cache_read_price": "0.3",
            "image_cost": "0.04",
            "image_price": "0.05",
            "image_prices": "1024x1024|hd 0.08 0.1\n\n1792x1024 0.12 0.15\n",
        },
    )
    # then
    assert response.status_code == 302, response.context["form"].errors
    model = Model.objects.get(name="img-1")
    assert model.mode == "image"
    assert model.cache_read_price_micros == 300_000
    assert model.cache_read_cost_micros is None and model.reasoning_price_micros is None
    assert (model.image_cost_micros, model.image_price_micros) == (40_000, 50_000)
    assert model.image_prices == {
        "1024x1024|hd": {"cost": 80_000, "price": 100_000},
        "1792x1024": {"cost": 120_000, "price": 150_000},
    }
    assert model.audio_second_cost_micros == model.audio_second_price_micros == 0
    # and its page opens the section, showing what follows the input price
    edit = as_admin.get(reverse("panel:model_edit", args=[model.public_id]))
    assert b'id="more-prices" open>' in edit.content
    assert b'placeholder="= input price: 3"' in edit.content
    assert b"1024x1024|hd 0.08 0.10" in edit.content


def test_a_bad_image_price_line_is_shown_next_to_the_field(as_admin, catalog_objects):
    for text, words in (
        ("1024x1024|hd 0.08", "a size, a cost and a price"),
        ("huge 0.08 0.1", "is not a size"),
        ("1024x1024 -1 0.1", "must not be negative"),
    ):
        response = as_admin.post(
            reverse("panel:model_create"),
            {**MODEL, "upstream": catalog_objects["upstream"].pk, "image_prices": text},
        )
        assert response.status_code == 200
        (error,) = response.context["form"].errors["image_prices"]
        assert words in error, error
        assert b'id="more-prices" open>' in response.content
    assert not Model.objects.filter(name="img-1").exists()


def test_an_azure_upstream_without_its_api_version_is_refused_next_to_the_field(as_admin, db):
    base = {
        "name": "az",
        "kind": "azure_openai",
        "base_url": "https://x.openai.azure.com",
        "connect_timeout_seconds": "5",
        "read_timeout_seconds": "120",
        "enabled": "on",
    }
    refused = as_admin.post(reverse("panel:upstream_create"), base)
    assert refused.status_code == 200
    assert "api-version" in refused.context["form"].errors["api_version"][0]
    assert not Upstream.objects.exists()
    created = as_admin.post(reverse("panel:upstream_create"), {**base, "api_version": "2024-10-21"})
    assert created.status_code == 302
    upstream = Upstream.objects.get(name="az")
    assert upstream.api_version == "2024-10-21"
    edit = as_admin.get(reverse("panel:upstream_edit", args=[upstream.public_id]))
    assert b'value="2024-10-21"' in edit.content
