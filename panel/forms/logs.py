"""The logs page's filters: who made the call, what it asked for, how it ended, and when."""

from datetime import UTC, datetime, timedelta

from django import forms
from django.utils import timezone

from orgs.models import Organization
from teams.models import Team, VirtualKey

DEFAULT_WINDOW = timedelta(hours=24)
DATETIME_FORMAT = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> sends


class _UtcDateTimeField(forms.DateTimeField):
    """A datetime-local value read as UTC (the panel shows every time in UTC)."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format=DATETIME_FORMAT)
    input_formats = [DATETIME_FORMAT, "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"]

    def to_python(self, value):
        result = super().to_python(value)
        if result is not None:
            result = result.replace(tzinfo=UTC) if timezone.is_naive(result) else result
        return result


class LogFilterForm(forms.Form):
    request_id = forms.CharField(
        required=False,
        max_length=64,
        label="Request id",
        help_text="Looks the call up across all time; the other filters are ignored.",
    )
    organization = forms.CharField(required=False, max_length=40, label="Organization id")
    team = forms.CharField(required=False, max_length=40, label="Team id")
    key = forms.CharField(required=False, max_length=40, label="Key id")
    model = forms.CharField(required=False, max_length=200)
    model_group = forms.CharField(required=False, max_length=200, label="Model group")
    status = forms.ChoiceField(required=False, choices=[("", "Any")])
    start = _UtcDateTimeField(required=False, label="From (UTC)")
    end = _UtcDateTimeField(required=False, label="To (UTC)")

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
        for name in ("request_id", "model", "model_group"):
            if "\x00" in data.get(name, ""):
                self.add_error(name, "Must not contain a NUL character.")
        start, end = data.get("start"), data.get("end")
        if start and end and start >= end:
            self.add_error("start", "Must be before the end of the range.")
        return data

    @staticmethod
    def with_defaults(query, now: datetime):
        """The query string with the range in effect filled in (the last 24 hours), so the form
        shows it and the paging links carry it."""
        data = query.copy()
        if not data.get("start") and not data.get("end") and not data.get("request_id"):
            data["start"] = (now - DEFAULT_WINDOW).strftime(DATETIME_FORMAT)
        return data

    def filters(self) -> dict:
        """Keyword arguments for panel.call_selectors.call_records."""
        data = self.cleaned_data
        filters = {"start": data.get("start"), "end": data.get("end")}
        if data.get("request_id"):
            return {"request_id": data["request_id"].strip()}
        for name in ("organization", "team", "key"):
            if data.get(name) is not None:
                filters[name] = data[name]
        for name in ("model", "model_group", "status"):
            if data.get(name):
                filters[name] = data[name].strip()
        return filters
