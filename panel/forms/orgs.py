"""The organization pages."""

from django import forms

from orgs.models import Organization


class OrganizationForm(forms.Form):
    name = forms.CharField(max_length=200)
    external_id = forms.CharField(
        label="External id",
        max_length=200,
        required=False,
        help_text="Your own id for this customer (CRM, billing). Optional; unique.",
    )
    billing_email = forms.EmailField(
        label="Billing email",
        max_length=254,
        required=False,
        help_text="Where budget and low-balance alert emails go. Empty: no alert emails.",
    )

    def service_fields(self) -> dict:
        data = dict(self.cleaned_data)
        data["external_id"] = data["external_id"] or None
        return data


class OrganizationEditForm(OrganizationForm):
    status = forms.ChoiceField(choices=Organization.Status.choices)
