"""Admin API: credits, the ledger and usage."""

import uuid
from datetime import timedelta

import django_filters
from django.db.models import F
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from billing import selectors, services
from billing.models import CallLog, Job, LedgerEntry, UsageRecord
from core.api import AdminView
from core.fields import MoneyField
from modelgroups.models import stored_secrets_redactor
from orgs.auth import IsPlatformAdmin
from orgs.models import Organization
from teams.models import Team


class CreditsOutput(serializers.Serializer):
    team = serializers.CharField()
    balance = MoneyField(source="balance_micros")
    overdraft_limit = MoneyField(source="overdraft_limit_micros")
    available = MoneyField(
        source="available_micros", help_text="Balance plus overdraft: what calls can still spend."
    )
    budget_period = serializers.CharField()
    budget_mode = serializers.CharField()
    budget_limit = MoneyField(source="budget_limit_micros", allow_null=True)
    period_spend = MoneyField(source="period_spend_micros")
    budget_remaining = MoneyField(source="budget_remaining_micros", allow_null=True)
    budget_state = serializers.ChoiceField(choices=["no_budget", "ok", "warning", "exceeded"])
    period_started_at = serializers.DateTimeField(
        allow_null=True, help_text="Start of the budget period the period spend belongs to."
    )
    next_reset_at = serializers.DateTimeField(
        allow_null=True,
        help_text="When the period spend resets and the allowance is credited (UTC); null "
        "without a budget period. Briefly in the past while a due reset is being applied.",
    )


class CreditChangeInput(serializers.Serializer):
    amount = MoneyField(allow_negative=True, help_text='Decimal string, e.g. "25.00".')
    reason = serializers.CharField(max_length=500)
    idempotency_key = serializers.CharField(
        max_length=100,
        required=False,
        help_text="Same key twice posts once (also read from the Idempotency-Key header).",
    )


class LedgerEntryOutput(serializers.ModelSerializer):
    amount = MoneyField(source="amount_micros")
    balance_after = MoneyField(source="balance_after_micros")
    cost = MoneyField(
        source="cost_micros", allow_null=True, help_text="Provider cost in USD (usage entries)."
    )

    class Meta:
        model = LedgerEntry
        fields = [
            "id",
            "kind",
            "amount",
            "balance_after",
            "cost",
            "idempotency_key",
            "actor",
            "reason",
            "metadata",
            "created_at",
        ]


class CreditChangeOutput(serializers.Serializer):
    entry = LedgerEntryOutput()
    credits = CreditsOutput()
    replayed = serializers.BooleanField(help_text="True when the idempotency key had posted.")


class TeamScoped(AdminView):
    def team(self, id) -> Team:
        qs = self.scope_to_org(Team.objects.select_related("account", "organization"))
        return get_object_or_404(qs, public_id=id)


class TeamCredits(TeamScoped):
    serializer_class = CreditsOutput

    @extend_schema(responses=CreditsOutput)
    def get(self, request, id):
        return Response(CreditsOutput(selectors.credits_summary(team=self.team(id))).data)


class CreditChange(TeamScoped):
    # Money is the platform's to give: an organization-scoped key cannot grant its own teams
    # credits (the same answer for every team id, so nothing is revealed).
    permission_classes = [IsPlatformAdmin]
    serializer_class = CreditChangeOutput
    service = None

    @extend_schema(
        request=CreditChangeInput, responses={201: CreditChangeOutput, 200: CreditChangeOutput}
    )
    def post(self, request, id):
        team = self.team(id)
        data = CreditChangeInput(data=request.data)
        data.is_valid(raise_exception=True)
        key = (
            data.validated_data.get("idempotency_key")
            or request.headers.get("Idempotency-Key")
            or uuid.uuid4().hex
        )
        result = type(self).service(
            team=team,
            amount_micros=data.validated_data["amount"],
            reason=data.validated_data["reason"],
            actor=self.actor,
            idempotency_key=key,
        )
        team.account.refresh_from_db()
        body = {
            "entry": result.entry,
            "credits": selectors.credits_summary(team=team),
            "replayed": not result.created,
        }
        return Response(
            CreditChangeOutput(body).data,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )


class CreditGrant(CreditChange):
    service = staticmethod(services.credits_grant)


class CreditAdjust(CreditChange):
    service = staticmethod(services.credits_adjust)


class TeamLedger(TeamScoped):
    serializer_class = LedgerEntryOutput
    filterset_fields = ["kind"]

    def get_queryset(self):
        return LedgerEntry.objects.all()

    @extend_schema(responses=LedgerEntryOutput(many=True))
    def get(self, request, id):
        team = self.team(id)
        return self.paginated(LedgerEntry.objects.filter(account__team=team), LedgerEntryOutput)


class UsageQuery(serializers.Serializer):
    start = serializers.DateTimeField(required=False, help_text="Default: 30 days ago.")
    end = serializers.DateTimeField(required=False, help_text="Default: now.")
    group_by = serializers.CharField(
        default="day",
        help_text="One dimension, or two joined by a comma: "
        + ", ".join(selectors.GROUPINGS)
        + " (e.g. day,model).",
    )

    def validate_group_by(self, value: str) -> str:
        try:
            return ",".join(selectors.grouping(value))
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate(self, attrs):
        attrs.setdefault("end", timezone.now())
        if "start" not in attrs:
            try:
                attrs["start"] = attrs["end"] - timedelta(days=30)
            except OverflowError:  # an end in the first days of year 1
                raise serializers.ValidationError({"end": ["Out of range."]}) from None
        if attrs["start"] >= attrs["end"]:
            raise serializers.ValidationError({"start": ["Must be before end."]})
        if attrs["end"] - attrs["start"] > timedelta(days=366):
            raise serializers.ValidationError({"start": ["The range is at most 366 days."]})
        return attrs


# What each count of separately priced usage is, for the usage and calls APIs.
COUNT_HELP = {
    "cache_read_tokens": "Input tokens read from the provider's prompt cache (in input_tokens).",
    "cache_write_tokens": "Input tokens written to the provider's prompt cache (in input_tokens).",
    "reasoning_tokens": "Reasoning tokens (in output_tokens).",
    "audio_input_tokens": "Audio input tokens (in input_tokens).",
    "audio_output_tokens": "Audio output tokens (in output_tokens).",
    "image_count": "Images generated.",
    "audio_ms": "Audio transcribed, milliseconds.",
    "characters": "Characters of speech (text-to-speech) input.",
}


class UsageNumbers(serializers.Serializer):
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    input_tokens = serializers.IntegerField(help_text="All input tokens, each kind included.")
    output_tokens = serializers.IntegerField(help_text="All output tokens, each kind included.")
    cache_read_tokens = serializers.IntegerField(help_text=COUNT_HELP["cache_read_tokens"])
    cache_write_tokens = serializers.IntegerField(help_text=COUNT_HELP["cache_write_tokens"])
    reasoning_tokens = serializers.IntegerField(help_text=COUNT_HELP["reasoning_tokens"])
    audio_input_tokens = serializers.IntegerField(help_text=COUNT_HELP["audio_input_tokens"])
    audio_output_tokens = serializers.IntegerField(help_text=COUNT_HELP["audio_output_tokens"])
    image_count = serializers.IntegerField(help_text=COUNT_HELP["image_count"])
    audio_ms = serializers.IntegerField(help_text=COUNT_HELP["audio_ms"])
    characters = serializers.IntegerField(help_text=COUNT_HELP["characters"])
    cost = MoneyField(source="cost_micros", help_text="Provider cost, USD.")
    price = MoneyField(source="price_micros", help_text="Charged, credits.")
    refused = serializers.IntegerField(
        allow_null=True,
        help_text="Calls the gateway refused (answered with an error: a limit, a budget, a "
        "key, a model not allowed, an upstream failure...), by the hours overlapping the range; "
        "up to a minute or so behind. Null for groupings (model_group, status) and filters "
        "(status) refusals do not have. Refused calls are not in requests or errors, except "
        "an upstream failure after admission, which is also a settled call with an error.",
    )


class UsageRow(UsageNumbers):
    """The numbers of one group: the dimensions grouped by name it."""

    day = serializers.CharField(required=False, help_text="YYYY-MM-DD (UTC)")
    hour = serializers.CharField(required=False, help_text="ISO 8601, the hour's start (UTC)")
    team = serializers.CharField(required=False)
    key = serializers.CharField(required=False, allow_null=True)
    model = serializers.CharField(required=False)
    model_group = serializers.CharField(
        required=False, help_text="The group called; empty when a model was called by name."
    )
    status = serializers.CharField(required=False)
    end_user = serializers.CharField(
        required=False, help_text="The call's `user` (or Messages' metadata.user_id); empty: none."
    )
    tag = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="A request tag; a call with several is in each tag's row, null: untagged.",
    )


class UsageOutput(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    group_by = serializers.CharField()
    totals = UsageNumbers()
    rows = UsageRow(many=True)


USAGE_PARAMS = [
    OpenApiParameter("start", str, description="ISO 8601; default 30 days ago"),
    OpenApiParameter("end", str, description="ISO 8601; default now"),
    OpenApiParameter(
        "group_by",
        str,
        description="One of "
        + ", ".join(selectors.GROUPINGS)
        + ", or two joined by a comma (day,model); default day",
    ),
]


class UsageView(AdminView):
    serializer_class = UsageOutput

    def usage(self, request, scope: dict):
        query = UsageQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        result = selectors.usage_summary(
            scope=scope, start=q["start"], end=q["end"], group_by=q["group_by"]
        )
        return Response(UsageOutput({**q, **result}).data)


class TeamUsage(UsageView, TeamScoped):
    @extend_schema(parameters=USAGE_PARAMS, responses=UsageOutput)
    def get(self, request, id):
        return self.usage(request, {"team": self.team(id)})


class OrganizationUsage(UsageView):
    @extend_schema(parameters=USAGE_PARAMS, responses=UsageOutput)
    def get(self, request, id):
        org = get_object_or_404(
            self.scope_to_org(Organization.objects.all(), path="pk"), public_id=id
        )
        return self.usage(request, {"organization": org})


class CallOutput(serializers.ModelSerializer):
    """One metered gateway call."""

    team = serializers.CharField(source="team.public_id")
    key = serializers.CharField(source="key.public_id", allow_null=True, default=None)
    job = serializers.CharField(source="job.public_id", allow_null=True, default=None)
    cost = MoneyField(source="cost_micros", help_text="Provider cost in USD.")
    price = MoneyField(source="price_micros", help_text="Credits charged.")

    class Meta:
        model = UsageRecord
        extra_kwargs = {name: {"help_text": text} for name, text in COUNT_HELP.items()}
        fields = [
            "request_id",
            "team",
            "key",
            "job",
            "model",
            "model_group",
            "input_tokens",
            "output_tokens",
            *COUNT_HELP,
            "cost",
            "price",
            "status",
            "cache_hit",
            "latency_ms",
            "end_user",
            "tags",
            "created_at",
        ]


class CallLogOutput(serializers.ModelSerializer):
    class Meta:
        model = CallLog
        fields = ["request_body", "response_body", "truncated", "expires_at"]


class CallDetailOutput(CallOutput):
    log = CallLogOutput(
        allow_null=True, help_text="Logged bodies (compliance logging), when the team logs them."
    )

    class Meta(CallOutput.Meta):
        fields = [*CallOutput.Meta.fields, "log"]


class CallFilter(django_filters.FilterSet):
    job = django_filters.CharFilter(field_name="job__public_id")
    key = django_filters.CharFilter(field_name="key__public_id")
    model = django_filters.CharFilter()
    status = django_filters.ChoiceFilter(choices=UsageRecord.Status.choices)
    cache_hit = django_filters.BooleanFilter()
    end_user = django_filters.CharFilter()
    tag = django_filters.CharFilter(field_name="tags", lookup_expr="contains", method="with_tag")

    class Meta:
        model = UsageRecord
        fields = ["job", "key", "model", "status", "cache_hit", "end_user", "tag"]

    def with_tag(self, queryset, name, value):
        return queryset.filter(tags__contains=[value])


def _calls():
    return UsageRecord.objects.select_related("team", "key", "job")


class TeamCalls(TeamScoped):
    """The team's raw call records, newest first (settled within seconds of the call)."""

    serializer_class = CallOutput
    filterset_class = CallFilter

    def get_queryset(self):
        return _calls()

    @extend_schema(responses=CallOutput(many=True))
    def get(self, request, id):
        return self.paginated(_calls().filter(team=self.team(id)), CallOutput)


class CallDetail(AdminView):
    serializer_class = CallDetailOutput

    @extend_schema(responses=CallDetailOutput)
    def get(self, request, id):
        call = get_object_or_404(self.scope_to_org(_calls()), request_id=id)
        call.log = CallLog.objects.filter(request_id=call.request_id).first()
        if call.log is not None:
            # Redacted when logged; again now, for provider keys stored since then.
            redact = stored_secrets_redactor()
            call.log.request_body = redact(call.log.request_body)
            call.log.response_body = redact(call.log.response_body)
        return Response(CallDetailOutput(call).data)


class JobOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    team = serializers.CharField(source="team.public_id")
    key = serializers.CharField(source="key.public_id", allow_null=True, default=None)
    type = serializers.CharField(source="job_type")
    job_price = MoneyField(source="fee_micros", help_text="Flat price (per_job pricing).")
    charged = MoneyField(source="charged_micros", help_text="What closing the job charged.")
    calls = serializers.IntegerField(source="n_calls")
    failed_calls = serializers.IntegerField(source="n_failed")
    input_tokens = serializers.IntegerField(source="in_tokens")
    output_tokens = serializers.IntegerField(source="out_tokens")
    cost = MoneyField(source="calls_cost", help_text="Provider cost of its calls, USD.")
    price = MoneyField(source="total_price", help_text="Its calls' prices plus charged.")

    class Meta:
        model = Job
        fields = [
            "id",
            "team",
            "key",
            "type",
            "status",
            "metadata",
            "job_price",
            "charged",
            "calls",
            "failed_calls",
            "input_tokens",
            "output_tokens",
            "cost",
            "price",
            "created_at",
            "closed_at",
        ]


class JobDetailOutput(JobOutput):
    call_records = CallOutput(many=True, help_text="Its calls, newest first (up to 1000).")

    class Meta(JobOutput.Meta):
        fields = [*JobOutput.Meta.fields, "call_records"]


class JobFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Job.Status.choices)
    type = django_filters.CharFilter(field_name="job_type")

    class Meta:
        model = Job
        fields = ["status", "type"]


def _jobs():
    return (
        Job.objects.select_related("team", "key")
        .annotate(**selectors.JOB_TOTALS)
        .annotate(total_price=F("calls_price") + F("charged_micros"))
    )


class TeamJobs(TeamScoped):
    """The team's jobs (settled from the gateway within seconds), newest first."""

    serializer_class = JobOutput
    filterset_class = JobFilter

    def get_queryset(self):
        return _jobs()

    @extend_schema(responses=JobOutput(many=True))
    def get(self, request, id):
        return self.paginated(_jobs().filter(team=self.team(id)), JobOutput)


class JobDetail(AdminView):
    serializer_class = JobDetailOutput

    @extend_schema(responses=JobDetailOutput)
    def get(self, request, id):
        job = get_object_or_404(self.scope_to_org(_jobs()), public_id=id)
        job.call_records = list(_calls().filter(job=job)[:1000])
        return Response(JobDetailOutput(job).data)
