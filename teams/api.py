"""Admin API: teams, their status, and their virtual keys."""

import django_filters
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response

from core.api import AdminView
from core.errors import rule_checked
from core.fields import JSONObjectField, MoneyField, PublicIdRelatedField
from core.money import MoneyError, format_micros, parse_micros
from litellm_sync.api import sync_state_field
from modelgroups.models import ModelGroup
from orgs.auth import IsPlatformAdmin
from orgs.models import Organization
from teams import rules, services
from teams.models import Team, VirtualKey


def _group_field(**kwargs):
    return PublicIdRelatedField(
        kind="model group", name_field="name", queryset=ModelGroup.objects.all(), **kwargs
    )


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "string", "format": "decimal"},
        "example": {"summarize": "0.500000"},
    }
)
class JobPricesField(serializers.Field):
    """{job type: decimal price} on the wire, {job type: micro-credits} stored."""

    default_error_messages = {"invalid": "{message}"}

    def to_representation(self, value):
        return {k: format_micros(v) for k, v in (value or {}).items()}

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("invalid", message='Send an object such as {"summarize": "0.50"}.')
        rule_checked(
            rules.validate_job_types, data, error=serializers.ValidationError
        )  # before parsing what may be refused
        prices = {}
        for job_type, price in data.items():
            if isinstance(price, bool) or not isinstance(price, str | int):
                self.fail("invalid", message=f'Price of {job_type}: send a string like "0.50".')
            try:
                prices[job_type] = parse_micros(price)
            except MoneyError as exc:
                self.fail("invalid", message=f"Price of {job_type}: {exc}")
        return prices


class RegexListField(serializers.ListField):
    """Redaction patterns: a bad one is a 400 naming its position, not a gateway error."""

    def __init__(self, **kwargs):
        kwargs.setdefault(
            "child", serializers.CharField(max_length=rules.REDACT_PATTERN_LENGTH_MAX)
        )
        kwargs.setdefault("max_length", rules.REDACT_PATTERNS_MAX)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        patterns = super().to_internal_value(data)
        for i, pattern in enumerate(patterns):
            problem = rules.redact_pattern_problem(pattern)
            if problem:
                raise serializers.ValidationError({i: [f"The pattern {problem}"]})
        return patterns


def _integer(field: str, **kwargs) -> serializers.IntegerField:
    """An integer team setting within its bounds (teams.rules)."""
    return serializers.IntegerField(**rules.bounds(field), required=False, **kwargs)


class TeamOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    organization = serializers.CharField(source="organization.public_id")
    model_groups = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    budget_limit = MoneyField(source="budget_limit_micros", allow_null=True)
    allowance = MoneyField(source="allowance_micros", allow_null=True)
    low_balance_alert = MoneyField(source="low_balance_alert_micros", allow_null=True)
    overdraft_limit = MoneyField(source="account.overdraft_limit_micros")
    credits_per_usd = MoneyField(source="credits_per_usd_micros", allow_null=True)
    price_per_unit = MoneyField(source="price_per_unit_micros", allow_null=True)
    job_price = MoneyField(source="job_price_micros", allow_null=True)
    job_type_prices = JobPricesField()
    litellm_sync = sync_state_field()

    class Meta:
        model = Team
        fields = [
            "id",
            "organization",
            "name",
            "external_id",
            "metadata",
            "status",
            "model_groups",
            "rpm_limit",
            "tpm_limit",
            "max_parallel_requests",
            "budget_period",
            "budget_limit",
            "budget_mode",
            "alert_thresholds",
            "low_balance_alert",
            "allowance",
            "allowance_rollover",
            "overdraft_limit",
            "pricing_mode",
            "credits_per_usd",
            "tokens_per_unit",
            "price_per_unit",
            "job_price",
            "job_type_prices",
            "cache_ttl_seconds",
            "cache_hit_price_percent",
            "log_bodies",
            "log_retention_days",
            "log_redact_patterns",
            "litellm_sync",
            "created_at",
            "updated_at",
        ]


class TeamInput(serializers.Serializer):
    organization = PublicIdRelatedField(kind="organization", queryset=Organization.objects.all())
    name = serializers.CharField(max_length=200)
    external_id = serializers.CharField(max_length=200, required=False, allow_null=True)
    metadata = JSONObjectField(required=False)
    model_groups = serializers.ListField(child=_group_field(), required=False)
    rpm_limit = _integer("rpm_limit", allow_null=True)
    tpm_limit = _integer("tpm_limit", allow_null=True)
    max_parallel_requests = _integer("max_parallel_requests", allow_null=True)
    budget_period = serializers.ChoiceField(choices=Team.BudgetPeriod.choices, required=False)
    budget_limit = MoneyField(source="budget_limit_micros", required=False, allow_null=True)
    budget_mode = serializers.ChoiceField(choices=Team.LimitMode.choices, required=False)
    alert_thresholds = serializers.ListField(
        child=serializers.IntegerField(), required=False, max_length=rules.ALERT_THRESHOLDS_MAX
    )
    low_balance_alert = MoneyField(
        source="low_balance_alert_micros",
        required=False,
        allow_null=True,
        help_text="Alert (once per period) when the balance falls below this; null: never.",
    )
    allowance = MoneyField(source="allowance_micros", required=False, allow_null=True)
    allowance_rollover = serializers.BooleanField(required=False)
    overdraft_limit = MoneyField(source="overdraft_limit_micros", required=False)
    pricing_mode = serializers.ChoiceField(choices=Team.PricingMode.choices, required=False)
    credits_per_usd = MoneyField(source="credits_per_usd_micros", required=False, allow_null=True)
    tokens_per_unit = _integer("tokens_per_unit", allow_null=True)
    price_per_unit = MoneyField(source="price_per_unit_micros", required=False, allow_null=True)
    job_price = MoneyField(source="job_price_micros", required=False, allow_null=True)
    job_type_prices = JobPricesField(required=False)
    cache_ttl_seconds = _integer("cache_ttl_seconds", allow_null=True)
    cache_hit_price_percent = _integer("cache_hit_price_percent")
    log_bodies = serializers.BooleanField(required=False)
    log_retention_days = _integer("log_retention_days")
    log_redact_patterns = RegexListField(required=False)


class TeamUpdateInput(TeamInput):
    organization = None  # a team never moves between organizations


class TeamFilter(django_filters.FilterSet):
    organization = django_filters.CharFilter(field_name="organization__public_id")
    status = django_filters.ChoiceFilter(choices=Team.Status.choices)
    external_id = django_filters.CharFilter()
    search = django_filters.CharFilter(field_name="name", lookup_expr="icontains")

    class Meta:
        model = Team
        fields = ["organization", "status", "external_id"]


class TeamViewMixin(AdminView):
    serializer_class = TeamOutput

    def get_queryset(self):
        return self.scope_to_org(
            Team.objects.select_related("organization", "account", "litellm_sync").prefetch_related(
                "model_groups"
            )
        )


class TeamList(TeamViewMixin):
    filterset_class = TeamFilter

    @extend_schema(responses=TeamOutput(many=True))
    def get(self, request):
        return self.paginated(self.get_queryset(), TeamOutput)

    @extend_schema(request=TeamInput, responses={201: TeamOutput})
    def post(self, request):
        data = TeamInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        org = fields.pop("organization")
        if not self.principal.is_platform and org != self.principal.organization:
            # Same answer as for an id that does not exist: no probing other tenants.
            raise serializers.ValidationError(
                {"organization": [f"No organization with id {org.public_id}."]}
            )
        team = services.team_create(actor=self.actor, organization=org, **fields)
        return Response(
            TeamOutput(self.get_queryset().get(pk=team.pk)).data, status=status.HTTP_201_CREATED
        )


class TeamDetail(TeamViewMixin):
    @extend_schema(responses=TeamOutput)
    def get(self, request, id):
        return Response(TeamOutput(self.get_object()).data)

    @extend_schema(request=TeamUpdateInput(partial=True), responses=TeamOutput)
    def patch(self, request, id):
        team = self.get_object()
        if "overdraft_limit" in request.data and not self.principal.is_platform:
            # Extending credit is a platform decision, not one an organization makes for itself.
            self.permission_denied(request, IsPlatformAdmin.message)
        data = TeamUpdateInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        groups = fields.pop("model_groups", None)
        services.team_update(actor=self.actor, team=team, data=fields, model_groups=groups)
        return Response(TeamOutput(self.get_queryset().get(pk=team.pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, id):
        services.team_delete(actor=self.actor, team=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class TeamStatusAction(TeamViewMixin):
    target_status: str = ""

    @extend_schema(request=None, responses=TeamOutput)
    def post(self, request, id):
        team = services.team_set_status(
            actor=self.actor, team=self.get_object(), status=self.target_status
        )
        return Response(TeamOutput(team).data)


class TeamSuspend(TeamStatusAction):
    target_status = Team.Status.SUSPENDED


class TeamResume(TeamStatusAction):
    target_status = Team.Status.ACTIVE


class TeamPause(TeamStatusAction):
    target_status = Team.Status.PAUSED


class KeyOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    team = serializers.CharField(source="team.public_id")
    model_groups = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    budget_limit = MoneyField(source="budget_limit_micros", allow_null=True)
    litellm_sync = sync_state_field()

    class Meta:
        model = VirtualKey
        fields = [
            "id",
            "team",
            "name",
            "key_prefix",
            "status",
            "expires_at",
            "model_groups",
            "rpm_limit",
            "tpm_limit",
            "budget_limit",
            "metadata",
            "previous_valid_until",
            "litellm_sync",
            "created_at",
            "updated_at",
            "last_used_at",
            "revoked_at",
        ]


class KeyCreated(KeyOutput):
    secret = serializers.CharField(help_text="Shown once. Store it now; it cannot be retrieved.")

    class Meta(KeyOutput.Meta):
        fields = [*KeyOutput.Meta.fields, "secret"]


class KeyInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    model_groups = serializers.ListField(child=_group_field(), required=False)
    rpm_limit = _integer("rpm_limit", allow_null=True)
    tpm_limit = _integer("tpm_limit", allow_null=True)
    budget_limit = MoneyField(source="budget_limit_micros", required=False, allow_null=True)
    metadata = JSONObjectField(required=False)


class KeyRotateInput(serializers.Serializer):
    grace_period_seconds = serializers.IntegerField(
        min_value=0,
        max_value=rules.KEY_GRACE_SECONDS_MAX,
        default=3600,
        help_text="How long the old secret keeps working (0 = stops at once).",
    )


class KeyFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=VirtualKey.Status.choices)
    search = django_filters.CharFilter(field_name="name", lookup_expr="icontains")

    class Meta:
        model = VirtualKey
        fields = ["status"]


class KeyViewMixin(AdminView):
    serializer_class = KeyOutput

    def get_queryset(self):
        return self.scope_to_org(
            VirtualKey.objects.select_related(
                "team__organization", "litellm_sync"
            ).prefetch_related("model_groups"),
            path="team__organization",
        )


class TeamKeyList(KeyViewMixin):
    filterset_class = KeyFilter

    def _team(self, id) -> Team:
        return get_object_or_404(self.scope_to_org(Team.objects.all()), public_id=id)

    @extend_schema(responses=KeyOutput(many=True))
    def get(self, request, id):
        team = self._team(id)
        return self.paginated(self.get_queryset().filter(team=team), KeyOutput)

    @extend_schema(request=KeyInput, responses={201: KeyCreated})
    def post(self, request, id):
        team = self._team(id)
        data = KeyInput(data=request.data)
        data.is_valid(raise_exception=True)
        key, secret = services.key_create(actor=self.actor, team=team, **data.validated_data)
        key.secret = secret
        return Response(KeyCreated(key).data, status=status.HTTP_201_CREATED)


class KeyDetail(KeyViewMixin):
    @extend_schema(responses=KeyOutput)
    def get(self, request, id):
        return Response(KeyOutput(self.get_object()).data)

    @extend_schema(request=KeyInput(partial=True), responses=KeyOutput)
    def patch(self, request, id):
        key = self.get_object()
        data = KeyInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        groups = fields.pop("model_groups", None)
        services.key_update(actor=self.actor, key=key, data=fields, model_groups=groups)
        return Response(KeyOutput(self.get_queryset().get(pk=key.pk)).data)

    @extend_schema(responses=KeyOutput, description="Revokes the key; it stays listed as revoked.")
    def delete(self, request, id):
        key = services.key_revoke(actor=self.actor, key=self.get_object())
        return Response(KeyOutput(key).data)


class KeyRotate(KeyViewMixin):
    @extend_schema(request=KeyRotateInput, responses=KeyCreated)
    def post(self, request, id):
        data = KeyRotateInput(data=request.data)
        data.is_valid(raise_exception=True)
        key, secret = services.key_rotate(
            actor=self.actor,
            key=self.get_object(),
            grace_seconds=data.validated_data["grace_period_seconds"],
        )
        key = self.get_queryset().get(pk=key.pk)
        key.secret = secret
        return Response(KeyCreated(key).data)
