"""Upstreams, models and model groups: the catalog customers' calls are routed through."""

import asyncio
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from core.errors import Conflict, ValidationFailed
from core.secrets import decrypt, encrypt
from mirrors.changes import catalog_changed, health_changed
from modelgroups import probe, rules
from modelgroups.models import (
    Model,
    ModelGroup,
    ModelGroupMember,
    ModelHealth,
    Upstream,
    stored_secrets_redactor,
)
from orgs.services import apply_changes, audit_deletion, audit_record


def _conflict(exc: IntegrityError, what: str, name: str) -> Conflict:
    return Conflict(f"A {what} named {name!r} already exists.", fields={"name": ["Already used."]})


def upstream_create(*, actor: str, name: str, api_key: str = "", **fields) -> Upstream:
    """Register an upstream; its API key is encrypted before it touches the database."""
    kind = fields.get("kind", Upstream.Kind.OPENAI)
    rules.validate_key_mode(kind, fields.get("key_mode", ""))
    rules.validate_api_version(kind, fields.get("api_version", ""))
    rules.validate_numbers(fields)
    try:
        with transaction.atomic(durable=True):
            upstream = Upstream.objects.create(
                name=name, api_key_encrypted=encrypt(api_key), **fields
            )
            audit_record(
                actor=actor,
                action="upstream.create",
                obj=upstream,
                changes={"name": [None, name], "base_url": [None, upstream.base_url]},
            )
            catalog_changed()
    except IntegrityError as exc:
        raise _conflict(exc, "upstream", name) from exc
    return upstream


def upstream_update(*, actor: str, upstream: Upstream, data: dict) -> Upstream:
    """Change an upstream; an api_key of "" clears the stored key, None leaves it."""
    kind = data.get("kind", upstream.kind)
    rules.validate_key_mode(kind, data.get("key_mode", upstream.key_mode))
    rules.validate_api_version(kind, data.get("api_version", upstream.api_version))
    rules.validate_numbers(data)
    api_key = data.pop("api_key", None)
    if api_key is not None:
        data["api_key_encrypted"] = encrypt(api_key)
    try:
        with transaction.atomic(durable=True):
            apply_changes(
                obj=upstream, actor=actor, action="upstream.update", organization_id=None, data=data
            )
            catalog_changed()
    except IntegrityError as exc:
        raise _conflict(exc, "upstream", data.get("name", upstream.name)) from exc
    return upstream


def upstream_delete(*, actor: str, upstream: Upstream) -> None:
    """Delete an upstream no model uses."""
    _catalog_delete(
        actor=actor,
        obj=upstream,
        action="upstream.delete",
        in_use=upstream.models,
        refusal="still serves models; move or delete them first.",
    )


def _catalog_delete(*, actor: str, obj, action: str, in_use, refusal: str) -> None:
    """Delete a catalog entry nothing refers to (`in_use`, checked in the same transaction),
    audited, and republish the catalog."""
    with transaction.atomic(durable=True):
        if in_use.exists():
            raise Conflict(f"{obj.public_id} {refusal}")
        audit_deletion(actor=actor, action=action, obj=obj)
        obj.delete()
        catalog_changed()


def default_price(cost_micros: int) -> int:
    """The operator's markup applied to a provider cost, rounded to the micro-credit."""
    return int((Decimal(cost_micros) * Decimal(str(settings.DEFAULT_PRICE_MARKUP))).to_integral())


def _fill_prices(fields: dict, model: Model | None = None) -> None:
    """A price left out on create, or set to null, follows the cost times the markup (the
    per-kind token prices stay null instead: they follow the input or output price)."""
    for price, cost in rules.MARKED_UP_PRICES.items():
        if (model is None and fields.get(price) is None) or (
            price in fields and fields[price] is None
        ):
            fields[price] = default_price(fields.get(cost, getattr(model, cost, 0)))


def _check_model_fields(fields: dict) -> None:
    rules.validate_numbers(fields)
    rules.validate_prices(fields)
    if "image_prices" in fields:
        if fields["image_prices"] is None:
            fields["image_prices"] = {}
        rules.validate_image_prices(fields["image_prices"])


def model_create(*, actor: str, name: str, upstream: Upstream, **fields) -> Model:
    """Add a model; prices default to the provider cost times the operator's markup."""
    _check_model_fields(fields)
    _fill_prices(fields)
    try:
        with transaction.atomic(durable=True):
            model = Model.objects.create(name=name, upstream=upstream, **fields)
            audit_record(
                actor=actor, action="model.create", obj=model, changes={"name": [None, name]}
            )
            catalog_changed()
    except IntegrityError as exc:
        raise _conflict(exc, "model", name) from exc
    return model


def model_update(*, actor: str, model: Model, data: dict) -> Model:
    """Change a model's routing, prices or limits."""
    _check_model_fields(data)
    _fill_prices(data, model)
    try:
        with transaction.atomic(durable=True):
            apply_changes(
                obj=model, actor=actor, action="model.update", organization_id=None, data=data
            )
            catalog_changed()
    except IntegrityError as exc:
        raise _conflict(exc, "model", data.get("name", model.name)) from exc
    return model


def model_delete(*, actor: str, model: Model) -> None:
    """Delete a model that no model group lists."""
    _catalog_delete(
        actor=actor,
        obj=model,
        action="model.delete",
        in_use=ModelGroupMember.objects.filter(model=model),
        refusal="is in model groups; remove it from them first.",
    )


def _set_members(group: ModelGroup, members: list[dict]) -> None:
    group.members.all().delete()
    ModelGroupMember.objects.bulk_create(
        ModelGroupMember(
            group=group, model=m["model"], priority=m.get("priority", i), weight=m.get("weight", 1)
        )
        for i, m in enumerate(members)
    )


def _describe(members: list[dict]) -> list[str]:
    return [
        f"{m['model'].name}@{m.get('priority', i)}x{m.get('weight', 1)}"
        for i, m in enumerate(members)
    ]


def model_group_create(*, actor: str, name: str, members: list[dict], **fields) -> ModelGroup:
    """Create a model group from an ordered list of {model, priority?, weight?}."""
    rules.validate_numbers(fields)
    rules.validate_members(members)
    try:
        with transaction.atomic(durable=True):
            group = ModelGroup.objects.create(name=name, **fields)
            _set_members(group, members)
            audit_record(
                actor=actor,
                action="model_group.create",
                obj=group,
                changes={"name": [None, name], "models": [None, _describe(members)]},
            )
            catalog_changed()
    except IntegrityError as exc:
        raise _conflict(exc, "model group", name) from exc
    return group


def model_group_update(*, actor: str, group: ModelGroup, data: dict, members=None) -> ModelGroup:
    """Rename or describe a group, or replace its ordered models."""
    rules.validate_numbers(data)
    if members is not None:
        rules.validate_members(members)
    try:
        with transaction.atomic(durable=True):
            extra = {}
            if members is not None:
                before = [
                    f"{m.model.name}@{m.priority}x{m.weight}"
                    for m in group.members.select_related("model")
                ]
                _set_members(group, members)
                after = _describe(members)
                if before != after:
                    extra["models"] = [before, after]
            apply_changes(
                obj=group,
                actor=actor,
                action="model_group.update",
                organization_id=None,
                data=data,
                extra_changes=extra,
            )
            catalog_changed()
    except IntegrityError as exc:
        raise _conflict(exc, "model group", data.get("name", group.name)) from exc
    return group


def model_group_delete(*, actor: str, group: ModelGroup) -> None:
    """Delete a model group that no team uses."""
    _catalog_delete(
        actor=actor,
        obj=group,
        action="model_group.delete",
        in_use=group.teams,
        refusal="is assigned to teams; unassign it first.",
    )


# --- health ---------------------------------------------------------------------------------

# The kinds the probe cannot speak to (it speaks the OpenAI API with bearer auth, Azure's
# deployments and api-key, and Anthropic's Messages): their models' health would stay unknown
# (never "down", which would make the gateway skip them). None at present.
UNPROBED_KINDS: tuple[str, ...] = ()
# A one-token call to these would generate an image or need an audio file: listed instead.
LISTED_MODES = (Model.Mode.IMAGE, Model.Mode.TRANSCRIPTION, Model.Mode.SPEECH)


def _probe_target(model: Model, method: str) -> probe.Target:
    upstream = model.upstream
    if model.mode in LISTED_MODES:
        method = Upstream.HealthCheck.MODELS
    return probe.Target(
        key=model.pk,
        method=method,
        mode=model.mode,
        base_url=upstream.base_url,
        upstream_model=model.upstream_model,
        api_key=decrypt(upstream.api_key_encrypted) if upstream.api_key_encrypted else "",
        connect_timeout=upstream.connect_timeout_seconds,
        kind=upstream.kind,
        api_version=upstream.api_version,
    )


def _probe(targets: list[probe.Target], timeout: float | None = None) -> dict[int, probe.Result]:
    return asyncio.run(
        probe.run(
            targets,
            concurrency=settings.HEALTH_PROBE_CONCURRENCY,
            timeout=timeout or settings.HEALTH_PROBE_TIMEOUT_SECONDS,
            slow_ms=settings.HEALTH_PROBE_SLOW_MS,
            deadline=settings.HEALTH_PROBE_ROUND_SECONDS,
        )
    )


def _health_record(model_pk: int, result: probe.Result, redact) -> None:
    """Store a verdict unless a newer one is already there (a manual check racing a round).
    The probe redacted its own upstream's key; `redact` removes every other stored secret."""
    ModelHealth.objects.filter(
        Q(checked_at__isnull=True) | Q(checked_at__lt=result.at), pk=model_pk
    ).update(
        status=result.status,
        latency_ms=result.latency_ms,
        last_error=redact(result.error),
        checked_at=result.at,
        # The right-hand side sees the old status: keep the date while the status holds.
        status_since=Case(
            When(status=result.status, status_since__isnull=False, then=F("status_since")),
            default=Value(result.at),
        ),
    )


def model_health_probe_due() -> int:
    """Probe every enabled model whose turn has come and publish the verdicts; returns how
    many were probed. Rows are claimed first, so overlapping rounds never probe one twice."""
    now = timezone.now()
    probed = (
        Model.objects.filter(enabled=True, upstream__enabled=True)
        .exclude(upstream__health_check=Upstream.HealthCheck.OFF)
        .exclude(upstream__kind__in=UNPROBED_KINDS)
    )
    new = probed.filter(health__isnull=True).values_list("pk", flat=True)
    ModelHealth.objects.bulk_create([ModelHealth(model_id=pk) for pk in new], ignore_conflicts=True)
    with transaction.atomic(durable=True):
        # A model whose upstream is no longer probed has no known health: an old "down"
        # must not keep the gateway skipping it.
        unprobed = list(
            ModelHealth.objects.filter(
                Q(model__upstream__health_check=Upstream.HealthCheck.OFF)
                | Q(model__upstream__kind__in=UNPROBED_KINDS)
            )
            .exclude(status=ModelHealth.Status.UNKNOWN)
            .values_list("pk", flat=True)
        )
        ModelHealth.objects.filter(pk__in=unprobed).update(
            status=ModelHealth.Status.UNKNOWN, latency_ms=None, last_error="", status_since=now
        )
        claimed = list(
            ModelHealth.objects.filter(model__in=probed)
            .filter(Q(next_check_at__isnull=True) | Q(next_check_at__lte=now))
            .order_by("pk")
            .select_for_update(skip_locked=True, no_key=True, of=("self",))
            .values_list("pk", flat=True)
        )
        # Half an interval: due again by the next beat, but not for a round running now.
        interval = timedelta(seconds=settings.HEALTH_PROBE_INTERVAL_SECONDS)
        ModelHealth.objects.filter(pk__in=claimed).update(next_check_at=now + interval / 2)
        if unprobed:
            health_changed(unprobed)
    models = Model.objects.select_related("upstream").filter(pk__in=claimed).order_by("pk")
    results = _probe([_probe_target(m, m.upstream.health_check) for m in models])
    redact = stored_secrets_redactor()
    with transaction.atomic(durable=True):
        for pk in sorted(results):  # primary-key order: no deadlock with a concurrent writer
            _health_record(pk, results[pk], redact)
        health_changed(sorted(results))
    return len(results)


def model_health_check(*, model: Model, timeout: float | None = None) -> ModelHealth:
    """Probe one model now (the panel's "test connection"), even when its upstream's periodic
    probe is off or the model is disabled; record and publish the verdict. `timeout` (seconds)
    shortens the probe's for a caller that waits on it, such as a panel page."""
    if model.upstream.kind in UNPROBED_KINDS:
        raise ValidationFailed(
            f"Models of {model.upstream.get_kind_display()} upstreams cannot be probed yet: "
            "call the model through the gateway to test it."
        )
    method = model.upstream.health_check
    if method == Upstream.HealthCheck.OFF:
        method = Upstream.HealthCheck.CALL  # asked for explicitly, so one call is fine
    result = _probe([_probe_target(model, method)], timeout).get(model.pk)
    if result is None:  # only if the round's deadline is shorter than the probe timeout
        result = probe.Result(probe.DOWN, None, "timed out", timezone.now())
    redact = stored_secrets_redactor()
    with transaction.atomic(durable=True):
        ModelHealth.objects.get_or_create(model=model)
        _health_record(model.pk, result, redact)
        health_changed([model.pk])
    return ModelHealth.objects.get(pk=model.pk)
