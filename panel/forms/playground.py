"""The playground: one prompt to a team's model group, through the gateway."""

from django import forms

from modelgroups.models import ModelGroup
from teams.models import Team


class PlaygroundForm(forms.Form):
    team = forms.CharField(max_length=40, widget=forms.HiddenInput)
    model_group = forms.ModelChoiceField(
        queryset=ModelGroup.objects.none(),
        label="Model group",
        empty_label=None,
        help_text="One of the team's model groups: what a customer puts in the model field.",
    )
    system = forms.CharField(
        label="System prompt",
        required=False,
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    prompt = forms.CharField(max_length=8000, widget=forms.Textarea(attrs={"rows": 4}))
    max_tokens = forms.IntegerField(
        label="Max tokens",
        min_value=1,
        max_value=4096,
        initial=256,
        help_text="Caps the answer, and what admission reserves from the credits meanwhile.",
    )

    def __init__(self, *args, team: Team | None, **kwargs):
        super().__init__(*args, **kwargs)
        self.team = team
        if team is not None:
            self.fields["model_group"].queryset = team.model_groups.order_by("name")

    def clean_team(self):
        if self.team is None or self.team.public_id != self.cleaned_data["team"]:
            raise forms.ValidationError("Pick a team first.")
        if self.team.status != Team.Status.ACTIVE:
            raise forms.ValidationError(
                f"This team is {self.team.status}: the gateway refuses its calls. Resume it first."
            )
        return self.team

    def chat_messages(self) -> list[dict]:
        """The chat messages to send."""
        messages = []
        if self.cleaned_data["system"].strip():
            messages.append({"role": "system", "content": self.cleaned_data["system"]})
        messages.append({"role": "user", "content": self.cleaned_data["prompt"]})
        return messages
