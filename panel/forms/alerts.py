"""The alerts pages: an organization's webhook endpoints."""

from django import forms

from alerts import rules
from panel.forms.common import OrganizationChoice


class WebhookForm(forms.Form):
    url = forms.URLField(
        label="URL",
        max_length=rules.WEBHOOK_URL_MAX_LENGTH,
        assume_scheme="https",
        validators=[rules.WEBHOOK_URL],
        help_text="Alerts are POSTed here as JSON, signed with the endpoint's secret.",
    )
    description = forms.CharField(max_length=rules.WEBHOOK_DESCRIPTION_MAX_LENGTH, required=False)
    enabled = forms.BooleanField(required=False, initial=True)


class WebhookCreateForm(OrganizationChoice, WebhookForm):
    field_order = ["organization", "url"]
