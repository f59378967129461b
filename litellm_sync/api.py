"""Admin API pieces for the LiteLLM integration."""

from dataclasses import asdict
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from core.api import AdminView
from core.errors import ServiceError, ValidationFailed
from core.fields import MoneyField
from litellm_sync import imports, selectors
from litellm_sync.client import LiteLLMError, LiteLLMNotConfigured
from litellm_sync.models import SyncState
from modelgroups.models import Upstream, stored_secrets_redactor
from orgs.auth import IsPlatformAdmin


class SyncStateOutput(serializers.Serializer):
    """Where LiteLLM's copy of a team or key stands; null while the integration is off."""

    state = serializers.ChoiceField(choices=SyncState.choices, read_only=True)
    error = serializers.CharField(source="last_error", read_only=True)
    attempts = serializers.IntegerField(read_only=True)
    next_retry_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="When a failed push is retried; null: not."
    )
    synced_at = serializers.DateTimeField(read_only=True, allow_null=True)


def sync_state_field(**kwargs) -> SyncStateOutput:
    return SyncStateOutput(
        read_only=True,
        allow_null=True,
        help_text="LiteLLM sync (synced, pending, or failed with the error and the next retry); "
        "null when the LiteLLM integration is off.",
        **kwargs,
    )


# --- platform-only endpoints ------------------------------------------------------------


class LiteLLMFailed(ServiceError):
    status = 502
    type = "litellm_error"


class ModelImportInput(serializers.Serializer):
    overwrite = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        default=list,
        max_length=1000,
        help_text="Models (by name) to update even though they were edited here.",
    )
    dry_run = serializers.BooleanField(
        default=False, help_text="Report what would change; change nothing."
    )


class SkippedModel(serializers.Serializer):
    name = serializers.CharField()
    reason = serializers.CharField()
    changes = serializers.DictField(
        child=serializers.ListField(), required=False, help_text="{field: [ours, LiteLLM's]}"
    )


class ModelImportOutput(serializers.Serializer):
    created = serializers.ListField(child=serializers.CharField())
    updated = serializers.ListField(child=serializers.CharField())
    unchanged = serializers.ListField(child=serializers.CharField())
    skipped = SkippedModel(many=True)
    missing_in_litellm = serializers.ListField(child=serializers.CharField())


class UpstreamModelImport(AdminView):
    """Import a LiteLLM upstream's model list (one call to its /model/info)."""

    permission_classes = [IsPlatformAdmin]
    serializer_class = ModelImportOutput

    def get_queryset(self):
        return Upstream.objects.all()

    @extend_schema(request=ModelImportInput, responses=ModelImportOutput)
    def post(self, request, id):
        upstream = self.get_object()
        data = ModelImportInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            result = imports.models_import(
                actor=self.actor, upstream=upstream, **data.validated_data
            )
        except LiteLLMNotConfigured as exc:
            raise ValidationFailed(
                "The upstream has no API key and LITELLM_MASTER_KEY is unset.",
                fields={"api_key": ["Required to read LiteLLM's model list."]},
            ) from exc
        except LiteLLMError as exc:
            raise LiteLLMFailed(stored_secrets_redactor()(str(exc))) from exc
        return Response(ModelImportOutput(asdict(result)).data)


class DriftQuery(serializers.Serializer):
    start = serializers.DateTimeField(required=False, help_text="Default: end minus 24 hours.")
    end = serializers.DateTimeField(
        required=False, help_text="Default: now minus the spend log's lag and overlap."
    )

    def validate(self, attrs):
        settled = settings.LITELLM_SPEND_LAG_SECONDS + settings.LITELLM_SPEND_OVERLAP_SECONDS
        attrs.setdefault("end", timezone.now() - timedelta(seconds=settled))
        try:
            attrs.setdefault("start", attrs["end"] - timedelta(days=1))
        except OverflowError:
            raise serializers.ValidationError({"end": ["Out of range."]}) from None
        if attrs["start"] >= attrs["end"]:
            raise serializers.ValidationError({"start": ["Must be before end."]})
        if attrs["end"] - attrs["start"] > timedelta(days=31):
            raise serializers.ValidationError({"start": ["The range is at most 31 days."]})
        return attrs


class MissingCalls(serializers.Serializer):
    count = serializers.IntegerField()
    request_ids = serializers.ListField(child=serializers.CharField(), help_text="Examples.")


class CostDrift(serializers.Serializer):
    team = serializers.CharField()
    model = serializers.CharField()
    day = serializers.CharField()
    calls = serializers.IntegerField()
    our_cost = MoneyField(source="our_cost_micros", help_text="USD, from our usage records.")
    litellm_cost = MoneyField(source="litellm_cost_micros", help_text="USD, LiteLLM's spend.")
    difference = MoneyField(source="difference_micros", help_text="LiteLLM's minus ours.")


class DirectCalls(serializers.Serializer):
    calls = serializers.IntegerField()
    charged = MoneyField(source="charged_micros", help_text="Credits charged from the log.")


class SyncCounts(serializers.Serializer):
    synced = serializers.IntegerField()
    pending = serializers.IntegerField()
    failed = serializers.IntegerField()


class SyncSummary(serializers.Serializer):
    teams = SyncCounts()
    keys = SyncCounts()


class DriftOutput(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    gateway_calls = serializers.IntegerField(help_text="Our calls served by LiteLLM upstreams.")
    matched = serializers.IntegerField()
    missing_in_litellm = MissingCalls()
    missing_in_tollgate = MissingCalls()
    cost_drift = CostDrift(many=True)
    direct_calls = DirectCalls()
    sync = SyncSummary()


class LiteLLMDrift(AdminView):
    """Drift between our metering and LiteLLM's spend log, and the sync's state."""

    permission_classes = [IsPlatformAdmin]
    serializer_class = DriftOutput

    @extend_schema(
        parameters=[
            OpenApiParameter("start", str, description="ISO 8601"),
            OpenApiParameter("end", str, description="ISO 8601"),
        ],
        responses=DriftOutput,
    )
    def get(self, request):
        query = DriftQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(DriftOutput(selectors.drift_report(**query.validated_data)).data)
