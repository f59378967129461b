"""Admin API: credits, the ledger and usage."""

import uuid
from datetime import timedelta

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from billing import selectors, services
from billing.models import LedgerEntry
from orgs.auth import IsPlatformAdmin
from orgs.models import Organization
from saas.api import AdminView
from saas.fields import MoneyField
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
    group_by = serializers.ChoiceField(choices=list(selectors.GROUPINGS), default="day")

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


class UsageNumbers(serializers.Serializer):
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost = MoneyField(source="cost_micros", help_text="Provider cost, USD.")
    price = MoneyField(source="price_micros", help_text="Charged, credits.")


class UsageRow(UsageNumbers):
    day = serializers.CharField(required=False)
    model = serializers.CharField(required=False)
    key = serializers.CharField(required=False, allow_null=True)


class UsageOutput(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    group_by = serializers.CharField()
    totals = UsageNumbers()
    rows = UsageRow(many=True)


USAGE_PARAMS = [
    OpenApiParameter("start", str, description="ISO 8601; default 30 days ago"),
    OpenApiParameter("end", str, description="ISO 8601; default now"),
    OpenApiParameter("group_by", str, enum=list(selectors.GROUPINGS)),
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
