"""The usage page's filters."""

from datetime import timedelta

from django import forms
from django.utils import timezone

from orgs.models import Organization
from teams.models import Team, VirtualKey


class UsageFilterForm(forms.Form):
    organization = forms.CharField(required=False, max_length=40, label="Organization id")
    team = forms.CharField(required=False, max_length=40, label="Team id")
    key = forms.CharField(required=False, max_length=40, label="Key id")
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

    def _lookup(self, name, model, label):
        public_id = self.cleaned_data[name].strip()
        if not public_id:
            return None
        obj = model.objects.filter(public_id=public_id).first()
        if obj is None:
            raise forms.ValidationError(f"No {label} with id {public_id}.")
        return obj

    def clean_organization(self):
        return self._lookup("organization", Organization, "organization")

    def clean_team(self):
        return self._lookup("team", Team, "team")

    def clean_key(self):
        return self._lookup("key", VirtualKey, "key")

    def clean(self):
        data = super().clean()
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
