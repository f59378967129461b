"""Admin API pieces for the LiteLLM integration."""

from rest_framework import serializers

from litellm_sync.models import SyncState


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
