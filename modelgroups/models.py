from django.conf import settings
from django.db import models
from django.db.models import Q

from core.ids import PublicIdField
from core.models import Stamped
from core.redaction import Redactor
from core.secrets import decrypt

# The `anthropic-version` header of an anthropic upstream that names none.
ANTHROPIC_DEFAULT_VERSION = "2023-06-01"


class Upstream(Stamped):
    """Where calls go: any OpenAI-compatible base URL (OpenAI, vLLM, Ollama, LiteLLM, …)."""

    class Kind(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic (native Messages API)"
        AZURE_OPENAI = "azure_openai", "Azure OpenAI"
        LITELLM = "litellm", "LiteLLM proxy"
        MOCK = "mock", "Built-in mock (development and tests only)"

    class HealthCheck(models.TextChoices):
        CALL = "call", "A one-token call to each model"
        MODELS = "models", "The upstream's model list (one request for all its models)"
        OFF = "off", "Not probed (health unknown)"

    class KeyMode(models.TextChoices):
        UPSTREAM = "upstream", "The upstream's own API key"
        # LiteLLM only: the customer's virtual key exists there too (litellm_sync), so
        # LiteLLM's per-team budgets, limits and spend tracking apply to gateway calls.
        CALLER = "caller", "The caller's virtual key, forwarded"

    public_id = PublicIdField(prefix="ups")
    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.OPENAI)
    base_url = models.URLField(max_length=500)
    # Fernet token (core.secrets.encrypt); write-only through every API.
    api_key_encrypted = models.TextField(blank=True)
    # Which key the gateway calls the upstream with.
    key_mode = models.CharField(max_length=16, choices=KeyMode.choices, default=KeyMode.UPSTREAM)
    connect_timeout_seconds = models.FloatField(default=5.0)
    # Applies between bytes, so long streams are fine while tokens keep coming.
    read_timeout_seconds = models.FloatField(default=120.0)
    # How the periodic probe checks this upstream's models (modelgroups.health).
    health_check = models.CharField(
        max_length=8, choices=HealthCheck.choices, default=HealthCheck.CALL
    )
    # azure_openai: the `api-version` query value (required); anthropic: the
    # `anthropic-version` header (blank: ANTHROPIC_DEFAULT_VERSION); unused by the others.
    api_version = models.CharField(max_length=40, blank=True)
    enabled = models.BooleanField(default=True)

    class Meta(Stamped.Meta):
        constraints = [
            models.CheckConstraint(
                condition=Q(connect_timeout_seconds__gt=0) & Q(read_timeout_seconds__gt=0),
                name="upstream_timeouts_positive",
            ),
            models.CheckConstraint(
                condition=Q(key_mode="upstream") | Q(kind="litellm"),
                name="upstream_caller_key_only_for_litellm",
            ),
        ]

    def __str__(self):
        return self.name

    @property
    def resolved_api_version(self) -> str:
        """The version the gateway sends: Anthropic's default when none is set."""
        if self.kind == self.Kind.ANTHROPIC and not self.api_version:
            return ANTHROPIC_DEFAULT_VERSION
        return self.api_version

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key_encrypted)


class Model(Stamped):
    class Mode(models.TextChoices):
        CHAT = "chat"
        COMPLETION = "completion"
        EMBEDDING = "embedding"
        IMAGE = "image", "image generation"
        TRANSCRIPTION = "transcription"
        SPEECH = "speech"
        MODERATION = "moderation"

    public_id = PublicIdField(prefix="mdl")
    name = models.CharField(max_length=200, unique=True)  # what customers put in `model`
    upstream = models.ForeignKey(Upstream, on_delete=models.PROTECT, related_name="models")
    upstream_model = models.CharField(max_length=200)  # the provider's id, substituted on the way
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.CHAT)
    # Provider cost in micro-USD per 1M tokens (what we pay).
    input_cost_micros = models.BigIntegerField(default=0)
    output_cost_micros = models.BigIntegerField(default=0)
    # Price in micro-credits per 1M tokens (what the customer pays).
    input_price_micros = models.BigIntegerField(default=0)
    output_price_micros = models.BigIntegerField(default=0)
    # Per 1M tokens of one kind, cost (micro-USD) and price (micro-credits); null = the same as
    # the input (cache read, cache write, audio input) or output (reasoning, audio output)
    # side, resolved when the catalog is published (DEFAULTED_PRICES), so it follows them.
    cache_read_cost_micros = models.BigIntegerField(null=True, blank=True)
    cache_read_price_micros = models.BigIntegerField(null=True, blank=True)
    cache_write_cost_micros = models.BigIntegerField(null=True, blank=True)
    cache_write_price_micros = models.BigIntegerField(null=True, blank=True)
    reasoning_cost_micros = models.BigIntegerField(null=True, blank=True)
    reasoning_price_micros = models.BigIntegerField(null=True, blank=True)
    audio_input_cost_micros = models.BigIntegerField(null=True, blank=True)
    audio_input_price_micros = models.BigIntegerField(null=True, blank=True)
    audio_output_cost_micros = models.BigIntegerField(null=True, blank=True)
    audio_output_price_micros = models.BigIntegerField(null=True, blank=True)
    # Per image generated (micro-USD / micro-credits), unless image_prices names its size:
    # {"<W>x<H>|<quality>" or "<W>x<H>": {"cost": micros, "price": micros}} (rules.IMAGE_KEY).
    image_cost_micros = models.BigIntegerField(default=0)
    image_price_micros = models.BigIntegerField(default=0)
    image_prices = models.JSONField(default=dict, blank=True)
    # Per second of audio transcribed, and per 1M characters of speech input.
    audio_second_cost_micros = models.BigIntegerField(default=0)
    audio_second_price_micros = models.BigIntegerField(default=0)
    character_cost_micros = models.BigIntegerField(default=0)
    character_price_micros = models.BigIntegerField(default=0)
    context_window = models.PositiveIntegerField(null=True, blank=True)
    # Output cap used to reserve credits when a request sets no max_tokens.
    max_output_tokens = models.PositiveIntegerField(default=4096)
    enabled = models.BooleanField(default=True)

    class Meta(Stamped.Meta):
        constraints = [
            models.CheckConstraint(
                condition=Q(input_cost_micros__gte=0)
                & Q(output_cost_micros__gte=0)
                & Q(input_price_micros__gte=0)
                & Q(output_price_micros__gte=0),
                name="model_prices_non_negative",
            ),
            # Null (a nullable one's default) passes a CHECK: only set values are checked.
            models.CheckConstraint(
                condition=Q(cache_read_cost_micros__gte=0)
                & Q(cache_read_price_micros__gte=0)
                & Q(cache_write_cost_micros__gte=0)
                & Q(cache_write_price_micros__gte=0)
                & Q(reasoning_cost_micros__gte=0)
                & Q(reasoning_price_micros__gte=0)
                & Q(audio_input_cost_micros__gte=0)
                & Q(audio_input_price_micros__gte=0)
                & Q(audio_output_cost_micros__gte=0)
                & Q(audio_output_price_micros__gte=0),
                name="model_token_prices_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(image_cost_micros__gte=0)
                & Q(image_price_micros__gte=0)
                & Q(audio_second_cost_micros__gte=0)
                & Q(audio_second_price_micros__gte=0)
                & Q(character_cost_micros__gte=0)
                & Q(character_price_micros__gte=0),
                name="model_unit_prices_non_negative",
            ),
        ]

    def __str__(self):
        return self.name


# Each nullable per-1M-token price and the field whose value it takes when null.
DEFAULTED_PRICES = {
    "cache_read_cost_micros": "input_cost_micros",
    "cache_read_price_micros": "input_price_micros",
    "cache_write_cost_micros": "input_cost_micros",
    "cache_write_price_micros": "input_price_micros",
    "reasoning_cost_micros": "output_cost_micros",
    "reasoning_price_micros": "output_price_micros",
    "audio_input_cost_micros": "input_cost_micros",
    "audio_input_price_micros": "input_price_micros",
    "audio_output_cost_micros": "output_cost_micros",
    "audio_output_price_micros": "output_price_micros",
}


def resolved_price(model: "Model", field: str) -> int:
    """A price field's value, a null one resolved to the field it defaults to."""
    value = getattr(model, field)
    return getattr(model, DEFAULTED_PRICES[field]) if value is None else value


class ModelHealth(models.Model):
    """The last probe of a model, written by modelgroups.health; no row yet = unknown."""

    class Status(models.TextChoices):
        UP = "up"
        DEGRADED = "degraded"  # answers, but slowly, rate-limited or not as expected
        DOWN = "down"  # the gateway skips it until its cooldown ends
        UNKNOWN = "unknown"  # never probed, or its upstream's probe is off

    model = models.OneToOneField(
        Model, on_delete=models.CASCADE, primary_key=True, related_name="health"
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.UNKNOWN)
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    # Redacted before it is stored: never holds the provider key.
    last_error = models.TextField(blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    status_since = models.DateTimeField(null=True, blank=True)
    # A probe round claims a row by moving this forward, so two rounds never probe it twice.
    next_check_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.model_id}:{self.status}"


class ModelGroup(Stamped):
    """A named, ordered bundle of models: priority order is fallback order."""

    public_id = PublicIdField(prefix="mg")
    name = models.SlugField(max_length=200, unique=True)  # what customers may put in `model`
    display_name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    # Response cache for calls to this group; null = off (a team's own setting wins).
    cache_ttl_seconds = models.PositiveIntegerField(null=True, blank=True)

    def __str__(self):
        return self.name


class ModelGroupMember(models.Model):
    group = models.ForeignKey(ModelGroup, on_delete=models.CASCADE, related_name="members")
    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="+")
    priority = models.PositiveIntegerField(default=0)  # lower is tried first
    weight = models.PositiveIntegerField(default=1)  # share among members of equal priority

    class Meta:
        ordering = ["priority", "id"]
        constraints = [
            models.UniqueConstraint(fields=["group", "model"], name="model_once_per_group"),
            models.CheckConstraint(condition=Q(weight__gte=1), name="member_weight_positive"),
        ]

    def __str__(self):
        return f"{self.group_id}:{self.model_id}@{self.priority}"


def stored_secrets_redactor(*also: str) -> Redactor:
    """Redacts every provider key Tollgate stores (all upstreams, compared exactly), the master
    keys, `also` and Tollgate's key formats: for upstream text the control plane stores or
    shows."""
    encrypted = Upstream.objects.exclude(api_key_encrypted="").values_list(
        "api_key_encrypted", flat=True
    )
    return Redactor(
        [
            *(decrypt(token) for token in encrypted),
            settings.MASTER_KEY,
            settings.LITELLM_MASTER_KEY,
            *also,
        ]
    )
