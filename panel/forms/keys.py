"""The key pages: mint, edit and rotate a team's virtual keys."""

from django import forms

from modelgroups.models import ModelGroup
from panel.forms.common import MoneyField, limit_field
from teams import rules
from teams.models import Team


class KeyForm(forms.Form):
    name = forms.CharField(max_length=200)
    expires_at = forms.DateTimeField(
        label="Expires at (UTC)",
        required=False,
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Empty: never expires.",
    )
    model_groups = forms.ModelMultipleChoiceField(
        queryset=ModelGroup.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Restrict to model groups",
        help_text="None ticked: everything the team may use.",
    )
    rpm_limit = limit_field(
        "Requests per minute", rules.bounds("rpm_limit"), "Empty: only the team's limit applies."
    )
    tpm_limit = limit_field(
        "Tokens per minute", rules.bounds("tpm_limit"), "Empty: only the team's limit applies."
    )
    budget_limit = MoneyField(
        label="Lifetime budget (credits)", help_text="Empty: bounded only by the team."
    )

    def __init__(self, *args, team: Team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model_groups"].queryset = team.model_groups.order_by("name")

    def service_fields(self) -> tuple[dict, list]:
        data = dict(self.cleaned_data)
        groups = list(data.pop("model_groups"))
        data["budget_limit_micros"] = data.pop("budget_limit")
        if data["expires_at"] is None:
            data.pop("expires_at")
        return data, groups


GRACE_CHOICES = [
    (0, "None: the old secret stops now"),
    (3600, "1 hour"),
    (86400, "24 hours"),
    (7 * 86400, "7 days"),
]


class RotateForm(forms.Form):
    grace_period_seconds = forms.TypedChoiceField(
        label="The old secret keeps working for",
        choices=GRACE_CHOICES,
        coerce=int,
        initial=3600,
    )
