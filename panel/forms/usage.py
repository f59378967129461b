"""The usage page's filters."""

from datetime import timedelta

from django import forms
from django.utils import timezone

from panel.forms.pickers import PickerField


class UsageFilterForm(forms.Form):
    organization = PickerField("organization", required=False, empty_label="Any")
    team = PickerField("team", required=False, empty_label="Any")
    key = PickerField("key", required=False, empty_label="Any")
    model = forms.CharField(required=False, max_length=200)
    status = forms.ChoiceField(
        required=False, choices=[("", "Any")], label="Status"
    )  # choices set below, from the model
    start = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From (UTC)"
    )
    end = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="To (UTC)"
    )

    MAX_DAYS = 366

    def __init__(self, *args, **kwargs):
        from billing.models import UsageRecord

        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [("", "Any"), *UsageRecord.Status.choices]

    def clean(self):
        data = super().clean()
        org, team, key = data.get("organization"), data.get("team"), data.get("key")
        # Each narrower pick must be inside the wider one: no team of another organization.
        if org is not None and team is not None and team.organization_id != org.pk:
            self.add_error("team", f"{team.name} is not a team of {org.name}.")
        elif key is not None and team is not None and key.team_id != team.pk:
            self.add_error("key", f"{key.name} is not a key of {team.name}.")
        elif key is not None and org is not None and key.team.organization_id != org.pk:
            self.add_error("key", f"{key.name} is not a key of {org.name}.")
        today = timezone.now().date()
        end = data.get("end") or today
        start = data.get("start") or end - timedelta(days=29)
        if start > end:
            self.add_error("start", "Must not be after the end date.")
        elif (end - start).days >= self.MAX_DAYS:
            self.add_error("start", f"The range is at most {self.MAX_DAYS} days.")
        data["start"], data["end"] = start, end
        return data

    def scope(self) -> dict:
        """Filters for billing.selectors.usage_summary and the raw calls."""
        scope = {}
        for name in ("organization", "team", "key"):
            if self.cleaned_data.get(name) is not None:
                scope[name] = self.cleaned_data[name]
        if self.cleaned_data.get("model"):
            scope["model"] = self.cleaned_data["model"].strip()
        if self.cleaned_data.get("status"):
            scope["status"] = self.cleaned_data["status"]
        return scope
