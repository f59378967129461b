"""Admin API: upstreams, models and model groups (the shared catalog)."""

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response

from core.api import AdminView
from core.errors import rule_checked
from core.fields import MoneyField, PublicIdRelatedField
from core.money import MoneyError, format_micros, parse_micros
from modelgroups import rules, services
from modelgroups.models import Model, ModelGroup, ModelHealth, Upstream
from orgs.auth import IsPlatformAdmin, PlatformWritesOnly


class UpstreamOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    has_api_key = serializers.BooleanField(read_only=True)

    class Meta:
        model = Upstream
        fields = [
            "id",
            "name",
            "kind",
            "base_url",
            "key_mode",
            "api_version",
            "has_api_key",
            "connect_timeout_seconds",
            "read_timeout_seconds",
            "health_check",
            "enabled",
            "created_at",
            "updated_at",
        ]


class UpstreamInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=Upstream.Kind.choices, required=False)
    base_url = serializers.URLField(max_length=500)
    api_key = serializers.CharField(
        required=False,
        allow_blank=True,
        write_only=True,
        trim_whitespace=True,
        help_text="Write-only; stored encrypted, never returned.",
    )
    key_mode = serializers.ChoiceField(
        choices=Upstream.KeyMode.choices,
        required=False,
        help_text="caller: forward the caller's own virtual key (LiteLLM upstreams only, with "
        "the LiteLLM sync on); upstream: use this upstream's api_key.",
    )
    connect_timeout_seconds = serializers.FloatField(
        **rules.bounds("connect_timeout_seconds"), required=False
    )
    read_timeout_seconds = serializers.FloatField(
        **rules.bounds("read_timeout_seconds"), required=False
    )
    health_check = serializers.ChoiceField(
        choices=Upstream.HealthCheck.choices,
        required=False,
        help_text="How its models are probed: a one-token call to each (default), one GET "
        "/models for all, or off.",
    )
    api_version = serializers.CharField(
        max_length=40,
        required=False,
        allow_blank=True,
        help_text="azure_openai: the api-version query value (required), e.g. 2024-10-21. "
        "anthropic: the anthropic-version header; blank = 2023-06-01.",
    )
    enabled = serializers.BooleanField(required=False)


class UpstreamBase(AdminView):
    permission_classes = [IsPlatformAdmin]
    serializer_class = UpstreamOutput
    filterset_fields = ["kind", "enabled"]

    def get_queryset(self):
        return Upstream.objects.all()


class UpstreamList(UpstreamBase):
    filterset_fields = ["kind", "enabled"]

    @extend_schema(responses=UpstreamOutput(many=True))
    def get(self, request):
        return self.paginated(self.get_queryset(), UpstreamOutput)

    @extend_schema(request=UpstreamInput, responses={201: UpstreamOutput})
    def post(self, request):
        data = UpstreamInput(data=request.data)
        data.is_valid(raise_exception=True)
        upstream = services.upstream_create(actor=self.actor, **data.validated_data)
        return Response(UpstreamOutput(upstream).data, status=status.HTTP_201_CREATED)


class UpstreamDetail(UpstreamBase):
    @extend_schema(responses=UpstreamOutput)
    def get(self, request, id):
        return Response(UpstreamOutput(self.get_object()).data)

    @extend_schema(request=UpstreamInput(partial=True), responses=UpstreamOutput)
    def patch(self, request, id):
        upstream = self.get_object()
        data = UpstreamInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.upstream_update(
            actor=self.actor, upstream=upstream, data=dict(data.validated_data)
        )
        return Response(UpstreamOutput(upstream).data)

    @extend_schema(responses={204: None})
    def delete(self, request, id):
        services.upstream_delete(actor=self.actor, upstream=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModelHealthOutput(serializers.ModelSerializer):
    class Meta:
        model = ModelHealth
        fields = ["status", "latency_ms", "last_error", "checked_at", "status_since"]
        extra_kwargs = {
            "latency_ms": {"help_text": "How long the last probe took."},
            "last_error": {"help_text": "Why the last probe failed, redacted; empty when up."},
            "status_since": {"help_text": "When the status last changed."},
        }


# What a model that was never probed shows.
UNKNOWN_HEALTH = ModelHealthOutput(ModelHealth()).data

_DECIMAL = {"type": "string", "format": "decimal", "example": "0.040000"}


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {
            "type": "object",
            "properties": {"cost": _DECIMAL, "price": _DECIMAL},
            "required": ["cost", "price"],
        },
        "maxProperties": rules.MAX_IMAGE_PRICES,
        "example": {"1024x1024|hd": {"cost": "0.080000", "price": "0.100000"}},
    }
)
class ImagePricesField(serializers.Field):
    """Prices per image by size ("1024x1024") or size and quality ("1024x1024|hd"): decimal
    strings on the wire (cost in USD, price in credits), micro-units in the database."""

    default_error_messages = {"invalid": "{message}"}

    def to_representation(self, value):
        return {
            k: {"cost": format_micros(v["cost"]), "price": format_micros(v["price"])}
            for k, v in value.items()
        }

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail(
                "invalid",
                message='Send an object such as {"1024x1024|hd": '
                '{"cost": "0.08", "price": "0.10"}}.',
            )
        table = {}
        for key, value in data.items():
            if not isinstance(value, dict) or set(value) != {"cost", "price"}:
                self.fail("invalid", message=f"{str(key)[:40]}: give exactly a cost and a price.")
            parsed = {}
            for part in ("cost", "price"):
                amount = value[part]
                if isinstance(amount, bool) or not isinstance(amount, str | int):
                    self.fail(
                        "invalid", message=f'{key} {part}: send a decimal string such as "0.04".'
                    )
                try:
                    parsed[part] = parse_micros(amount)
                except MoneyError as exc:
                    self.fail("invalid", message=f"{key} {part}: {exc}")
            table[key] = parsed
        return rule_checked(rules.validate_image_prices, table, error=serializers.ValidationError)


# The prices besides the input and output ones, with what each is per and its default.
EXTRA_PRICE_HELP = {
    "cache_read_cost_micros": "Provider cost, USD per 1M cached input tokens; null = input cost.",
    "cache_read_price_micros": "Credits per 1M cached input tokens; null = input price.",
    "cache_write_cost_micros": "USD per 1M cache-write input tokens; null = input cost.",
    "cache_write_price_micros": "Credits per 1M cache-write input tokens; null = input price.",
    "reasoning_cost_micros": "USD per 1M reasoning tokens; null = output cost.",
    "reasoning_price_micros": "Credits per 1M reasoning tokens; null = output price.",
    "audio_input_cost_micros": "USD per 1M audio input tokens; null = input cost.",
    "audio_input_price_micros": "Credits per 1M audio input tokens; null = input price.",
    "audio_output_cost_micros": "USD per 1M audio output tokens; null = output cost.",
    "audio_output_price_micros": "Credits per 1M audio output tokens; null = output price.",
    "image_cost_micros": "USD per image generated (sizes not in image_prices).",
    "image_price_micros": "Credits per image generated; omit or null on create: cost times "
    "the markup.",
    "audio_second_cost_micros": "USD per second of audio transcribed.",
    "audio_second_price_micros": "Credits per second of audio; omit or null on create: cost "
    "times the markup.",
    "character_cost_micros": "USD per 1M characters of speech input.",
    "character_price_micros": "Credits per 1M characters of speech input; omit or null on "
    "create: cost times the markup.",
}


class ModelOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    upstream = serializers.CharField(source="upstream.public_id")
    health = serializers.SerializerMethodField()
    input_cost_per_mtok = MoneyField(
        source="input_cost_micros", help_text="Provider cost, USD per 1M input tokens."
    )
    output_cost_per_mtok = MoneyField(source="output_cost_micros")
    input_price_per_mtok = MoneyField(
        source="input_price_micros", help_text="Price, credits per 1M input tokens."
    )
    output_price_per_mtok = MoneyField(source="output_price_micros")
    cache_read_cost_per_mtok = MoneyField(
        source="cache_read_cost_micros",
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["cache_read_cost_micros"],
    )
    cache_read_price_per_mtok = MoneyField(
        source="cache_read_price_micros",
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["cache_read_price_micros"],
    )
    cache_write_cost_per_mtok = MoneyField(
        source="cache_write_cost_micros",
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["cache_write_cost_micros"],
    )
    cache_write_price_per_mtok = MoneyField(
        source="cache_write_price_micros",
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["cache_write_price_micros"],
    )
    reasoning_cost_per_mtok = MoneyField(
        source="reasoning_cost_micros",
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["reasoning_cost_micros"],
    )
    reasoning_price_per_mtok = MoneyField(
        source="reasoning_price_micros",
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["reasoning_price_micros"],
    )
    audio_input_cost_per_mtok = MoneyField(
        source="audio_input_cost_micros",
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["audio_input_cost_micros"],
    )
    audio_input_price_per_mtok = MoneyField(
        source="audio_input_price_micros",
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["audio_input_price_micros"],
    )
    audio_output_cost_per_mtok = MoneyField(
        source="audio_output_cost_micros",
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["audio_output_cost_micros"],
    )
    audio_output_price_per_mtok = MoneyField(
        source="audio_output_price_micros",
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["audio_output_price_micros"],
    )
    image_cost = MoneyField(
        source="image_cost_micros", help_text=EXTRA_PRICE_HELP["image_cost_micros"]
    )
    image_price = MoneyField(
        source="image_price_micros", help_text=EXTRA_PRICE_HELP["image_price_micros"]
    )
    audio_cost_per_second = MoneyField(
        source="audio_second_cost_micros", help_text=EXTRA_PRICE_HELP["audio_second_cost_micros"]
    )
    audio_price_per_second = MoneyField(
        source="audio_second_price_micros", help_text=EXTRA_PRICE_HELP["audio_second_price_micros"]
    )
    character_cost_per_mchar = MoneyField(
        source="character_cost_micros", help_text=EXTRA_PRICE_HELP["character_cost_micros"]
    )
    character_price_per_mchar = MoneyField(
        source="character_price_micros", help_text=EXTRA_PRICE_HELP["character_price_micros"]
    )
    image_prices = ImagePricesField(
        help_text="Per image by size or size|quality; a size not listed: image_cost/price."
    )

    class Meta:
        model = Model
        fields = [
            "id",
            "name",
            "upstream",
            "upstream_model",
            "mode",
            "input_cost_per_mtok",
            "output_cost_per_mtok",
            "input_price_per_mtok",
            "output_price_per_mtok",
            *(rules.PRICE_FIELDS[f] for f in EXTRA_PRICE_HELP),
            "image_prices",
            "context_window",
            "max_output_tokens",
            "enabled",
            "health",
            "created_at",
            "updated_at",
        ]

    @extend_schema_field(ModelHealthOutput)
    def get_health(self, model):
        try:
            return ModelHealthOutput(model.health).data
        except ModelHealth.DoesNotExist:
            return dict(UNKNOWN_HEALTH)


class ModelInput(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    upstream = PublicIdRelatedField(
        kind="upstream", name_field="name", queryset=Upstream.objects.all()
    )
    upstream_model = serializers.CharField(max_length=200)
    mode = serializers.ChoiceField(choices=Model.Mode.choices, required=False)
    input_cost_per_mtok = MoneyField(source="input_cost_micros", required=False)
    output_cost_per_mtok = MoneyField(source="output_cost_micros", required=False)
    input_price_per_mtok = MoneyField(
        source="input_price_micros",
        required=False,
        allow_null=True,
        help_text="Omit or null: provider cost times the operator's markup.",
    )
    output_price_per_mtok = MoneyField(
        source="output_price_micros", required=False, allow_null=True
    )
    cache_read_cost_per_mtok = MoneyField(
        source="cache_read_cost_micros",
        required=False,
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["cache_read_cost_micros"],
    )
    cache_read_price_per_mtok = MoneyField(
        source="cache_read_price_micros",
        required=False,
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["cache_read_price_micros"],
    )
    cache_write_cost_per_mtok = MoneyField(
        source="cache_write_cost_micros",
        required=False,
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["cache_write_cost_micros"],
    )
    cache_write_price_per_mtok = MoneyField(
        source="cache_write_price_micros",
        required=False,
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["cache_write_price_micros"],
    )
    reasoning_cost_per_mtok = MoneyField(
        source="reasoning_cost_micros",
        required=False,
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["reasoning_cost_micros"],
    )
    reasoning_price_per_mtok = MoneyField(
        source="reasoning_price_micros",
        required=False,
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["reasoning_price_micros"],
    )
    audio_input_cost_per_mtok = MoneyField(
        source="audio_input_cost_micros",
        required=False,
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["audio_input_cost_micros"],
    )
    audio_input_price_per_mtok = MoneyField(
        source="audio_input_price_micros",
        required=False,
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["audio_input_price_micros"],
    )
    audio_output_cost_per_mtok = MoneyField(
        source="audio_output_cost_micros",
        required=False,
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["audio_output_cost_micros"],
    )
    audio_output_price_per_mtok = MoneyField(
        source="audio_output_price_micros",
        required=False,
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["audio_output_price_micros"],
    )
    image_cost = MoneyField(
        source="image_cost_micros", required=False, help_text=EXTRA_PRICE_HELP["image_cost_micros"]
    )
    image_price = MoneyField(
        source="image_price_micros",
        required=False,
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["image_price_micros"],
    )
    audio_cost_per_second = MoneyField(
        source="audio_second_cost_micros",
        required=False,
        help_text=EXTRA_PRICE_HELP["audio_second_cost_micros"],
    )
    audio_price_per_second = MoneyField(
        source="audio_second_price_micros",
        required=False,
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["audio_second_price_micros"],
    )
    character_cost_per_mchar = MoneyField(
        source="character_cost_micros",
        required=False,
        help_text=EXTRA_PRICE_HELP["character_cost_micros"],
    )
    character_price_per_mchar = MoneyField(
        source="character_price_micros",
        required=False,
        allow_null=True,
        help_text=EXTRA_PRICE_HELP["character_price_micros"],
    )
    image_prices = ImagePricesField(required=False)
    context_window = serializers.IntegerField(
        **rules.bounds("context_window"), required=False, allow_null=True
    )
    max_output_tokens = serializers.IntegerField(
        **rules.bounds("max_output_tokens"), required=False
    )
    enabled = serializers.BooleanField(required=False)


class ModelBase(AdminView):
    permission_classes = [PlatformWritesOnly]
    serializer_class = ModelOutput
    filterset_fields = ["mode", "enabled"]

    def get_queryset(self):
        return Model.objects.select_related("upstream", "health")


class ModelList(ModelBase):
    filterset_fields = ["mode", "enabled"]

    @extend_schema(responses=ModelOutput(many=True))
    def get(self, request):
        return self.paginated(self.get_queryset(), ModelOutput)

    @extend_schema(request=ModelInput, responses={201: ModelOutput})
    def post(self, request):
        data = ModelInput(data=request.data)
        data.is_valid(raise_exception=True)
        model = services.model_create(actor=self.actor, **data.validated_data)
        return Response(ModelOutput(model).data, status=status.HTTP_201_CREATED)


class ModelDetail(ModelBase):
    @extend_schema(responses=ModelOutput)
    def get(self, request, id):
        return Response(ModelOutput(self.get_object()).data)

    @extend_schema(request=ModelInput(partial=True), responses=ModelOutput)
    def patch(self, request, id):
        model = self.get_object()
        data = ModelInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.model_update(actor=self.actor, model=model, data=dict(data.validated_data))
        return Response(ModelOutput(model).data)

    @extend_schema(responses={204: None})
    def delete(self, request, id):
        services.model_delete(actor=self.actor, model=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModelCheck(ModelBase):
    permission_classes = [IsPlatformAdmin]

    @extend_schema(request=None, responses=ModelHealthOutput)
    def post(self, request, id):
        """Probe the model now (even if disabled or its upstream's probe is off) and return
        the verdict, which the gateways also learn."""
        health = services.model_health_check(model=self.get_object())
        return Response(ModelHealthOutput(health).data)


class MemberSerializer(serializers.Serializer):
    model = PublicIdRelatedField(kind="model", name_field="name", queryset=Model.objects.all())
    priority = serializers.IntegerField(
        **rules.bounds("priority"),
        required=False,
        help_text="Lower is tried first; default: list order.",
    )
    weight = serializers.IntegerField(
        **rules.bounds("weight"),
        required=False,
        help_text="Share of traffic among equal priorities.",
    )


class MemberOutput(serializers.Serializer):
    model = serializers.CharField(source="model.name")
    model_id = serializers.CharField(source="model.public_id")
    priority = serializers.IntegerField()
    weight = serializers.IntegerField()


class ModelGroupOutput(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id")
    models = MemberOutput(source="members", many=True)

    class Meta:
        model = ModelGroup
        fields = [
            "id",
            "name",
            "display_name",
            "description",
            "cache_ttl_seconds",
            "models",
            "created_at",
            "updated_at",
        ]


class ModelGroupInput(serializers.Serializer):
    name = serializers.SlugField(
        max_length=200, help_text="What customers put in `model`; letters, digits, - _"
    )
    display_name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)
    cache_ttl_seconds = serializers.IntegerField(
        **rules.bounds("cache_ttl_seconds"),
        required=False,
        allow_null=True,
        help_text="Cache identical requests for this long; null (default) = no cache.",
    )
    models = MemberSerializer(many=True, allow_empty=False)

    def validate_models(self, members):
        return rule_checked(rules.validate_members, members, error=serializers.ValidationError)


class ModelGroupBase(AdminView):
    permission_classes = [PlatformWritesOnly]
    serializer_class = ModelGroupOutput

    def get_queryset(self):
        return ModelGroup.objects.prefetch_related("members__model")


class ModelGroupList(ModelGroupBase):
    @extend_schema(responses=ModelGroupOutput(many=True))
    def get(self, request):
        return self.paginated(self.get_queryset(), ModelGroupOutput)

    @extend_schema(request=ModelGroupInput, responses={201: ModelGroupOutput})
    def post(self, request):
        data = ModelGroupInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        group = services.model_group_create(
            actor=self.actor, members=fields.pop("models"), **fields
        )
        return Response(
            ModelGroupOutput(self.get_queryset().get(pk=group.pk)).data,
            status=status.HTTP_201_CREATED,
        )


class ModelGroupDetail(ModelGroupBase):
    @extend_schema(responses=ModelGroupOutput)
    def get(self, request, id):
        return Response(ModelGroupOutput(self.get_object()).data)

    @extend_schema(request=ModelGroupInput(partial=True), responses=ModelGroupOutput)
    def patch(self, request, id):
        group = self.get_object()
        data = ModelGroupInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        members = fields.pop("models", None)
        services.model_group_update(actor=self.actor, group=group, data=fields, members=members)
        return Response(ModelGroupOutput(self.get_queryset().get(pk=group.pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request, id):
        services.model_group_delete(actor=self.actor, group=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
