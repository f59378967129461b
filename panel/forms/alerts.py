"""The alerts pages: an organization's webhook endpoints."""

from django import forms
from django.core.validators import URLValidator

from panel.forms.common import OrganizationChoice


class WebhookForm(forms.Form):
    url = forms.URLField(
        label="URL",
        max_length=500,
        assume_scheme="https",
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="Alerts are POSTed here as JSON, signed with the endpoint's secret.",
    )
    description = forms.CharField(max_length=200, required=False)
    enabled = forms.BooleanField(required=False, initial=True)


class WebhookCreateForm(OrganizationChoice, WebhookForm):
    field_order = ["organization", "url"]
