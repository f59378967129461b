"""Admin API: webhook endpoints, their delivery log, and a team's alerts."""

import django_filters
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response

from alerts import rules, services
from alerts.models import Alert, WebhookDelivery, WebhookEndpoint
from core.api import AdminView
from core.fields import PublicIdRelatedField
from core.money import format_micros
from orgs.models import Organization
from teams.models import Team


class WebhookOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    organization = serializers.CharField(source="organization.public_id")

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "organization", "url", "description", "enabled", "created_at", "updated_at"]


class WebhookCreated(WebhookOutput):
    secret = serializers.CharField(
        help_text="The signing secret. Shown once: store it now; it cannot be retrieved. "
        "Deliveries carry X-Tollgate-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "
        '"<t>.<raw body>" with this secret>.'
    )

    class Meta(WebhookOutput.Meta):
        fields = [*WebhookOutput.Meta.fields, "secret"]


class WebhookUpdateInput(serializers.Serializer):
    url = serializers.URLField(
        max_length=rules.WEBHOOK_URL_MAX_LENGTH, validators=[rules.WEBHOOK_URL]
    )
    description = serializers.CharField(
        max_length=rules.WEBHOOK_DESCRIPTION_MAX_LENGTH, required=False, allow_blank=True
    )
    enabled = serializers.BooleanField(required=False)


class WebhookInput(WebhookUpdateInput):
    organization = PublicIdRelatedField(
        kind="organization",
        queryset=Organization.objects.all(),
        required=False,
        help_text="Required with a platform key; an organization key's own by default.",
    )


class WebhookViewMixin(AdminView):
    serializer_class = WebhookOutput

    def get_queryset(self):
        return self.scope_to_org(WebhookEndpoint.objects.select_related("organization"))


class WebhookList(WebhookViewMixin):
    filterset_fields = ["enabled"]

    @extend_schema(responses=WebhookOutput(many=True))
    def get(self, request):
        return self.paginated(self.get_queryset(), WebhookOutput)

    @extend_schema(request=WebhookInput, responses={201: WebhookCreated})
    def post(self, request):
        data = WebhookInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        org = fields.pop("organization", None) or self.principal.organization
        if org is None:
            raise serializers.ValidationError({"organization": ["This field is required."]})
        if not self.principal.is_platform and org != self.principal.organization:
            # Same answer as for an id that does not exist: no probing other tenants.
            raise serializers.ValidationError(
                {"organization": [f"No organization with id {org.public_id}."]}
            )
        endpoint, secret = services.webhook_endpoint_create(
            actor=self.actor, organization=org, **fields
        )
        endpoint.secret = secret
        return Response(WebhookCreated(endpoint).data, status=status.HTTP_201_CREATED)


class WebhookDetail(WebhookViewMixin):
    @extend_schema(responses=WebhookOutput)
    def get(self, request, id):
        return Response(WebhookOutput(self.get_object()).data)

    @extend_schema(request=WebhookUpdateInput(partial=True), responses=WebhookOutput)
    def patch(self, request, id):
        endpoint = self.get_object()
        data = WebhookUpdateInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.webhook_endpoint_update(
            actor=self.actor, endpoint=endpoint, data=dict(data.validated_data)
        )
        return Response(WebhookOutput(endpoint).data)

    @extend_schema(responses={204: None}, description="Deletes the endpoint and its log.")
    def delete(self, request, id):
        services.webhook_endpoint_delete(actor=self.actor, endpoint=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecret(WebhookViewMixin):
    @extend_schema(
        request=None,
        responses=WebhookCreated,
        description="Replaces the signing secret at once and returns the new one (shown once).",
    )
    def post(self, request, id):
        endpoint, secret = services.webhook_endpoint_rotate_secret(
            actor=self.actor, endpoint=self.get_object()
        )
        endpoint.secret = secret
        return Response(WebhookCreated(endpoint).data)


class DeliveryOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    alert = serializers.CharField(source="alert.public_id")

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "alert",
            "event_type",
            "status",
            "attempts",
            "last_status_code",
            "last_error",
            "next_attempt_at",
            "delivered_at",
            "created_at",
            "updated_at",
            "payload",
        ]


class WebhookDeliveryList(WebhookViewMixin):
    serializer_class = DeliveryOutput
    filterset_fields = ["status"]

    def get_queryset(self):
        return WebhookDelivery.objects.all()  # for the filter backend; scoped below

    @extend_schema(responses=DeliveryOutput(many=True))
    def get(self, request, id):
        endpoint = get_object_or_404(WebhookViewMixin.get_queryset(self), public_id=id)
        return self.paginated(endpoint.deliveries.select_related("alert"), DeliveryOutput)


class AlertOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    team = serializers.CharField(source="team.public_id")
    threshold = serializers.SerializerMethodField(
        help_text="budget_threshold: a percentage of the period budget; low_balance: the "
        "balance line in credits (a decimal string)."
    )
    data = serializers.SerializerMethodField(help_text="The figures at the crossing.")

    class Meta:
        model = Alert
        fields = [
            "id",
            "team",
            "kind",
            "threshold",
            "period_start",
            "data",
            "email_to",
            "emailed_at",
            "email_error",
            "created_at",
        ]

    @extend_schema_field(serializers.CharField())
    def get_threshold(self, alert) -> str:
        if alert.kind == Alert.Kind.LOW_BALANCE:
            return format_micros(alert.threshold)
        return str(alert.threshold)

    def get_data(self, alert) -> dict:
        return services.alert_figures(alert)


class AlertFilter(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=Alert.Kind.choices)
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Alert
        fields = ["kind"]


class TeamAlerts(AdminView):
    serializer_class = AlertOutput
    filterset_class = AlertFilter

    def get_queryset(self):
        return Alert.objects.all()  # for the filter backend; scoped below

    @extend_schema(responses=AlertOutput(many=True))
    def get(self, request, id):
        team = get_object_or_404(self.scope_to_org(Team.objects.all()), public_id=id)
        return self.paginated(team.alerts.select_related("team"), AlertOutput)
