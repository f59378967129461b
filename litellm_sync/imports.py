"""Import LiteLLM's model list (/model/info, one call) into a LiteLLM upstream's models.

A model is created for each LiteLLM model name we lack, with its provider cost and context
sizes (prices follow the cost times the markup, as for any new model). A model imported before
is updated only while its fields still hold what the last import wrote: once an admin edited
it here, the import reports the difference and leaves it, unless the admin asks to overwrite
it by name. Models LiteLLM no longer lists are reported, never deleted.
"""

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from django.db import transaction

from core.errors import ValidationFailed
from core.secrets import decrypt
from litellm_sync.client import Deployment, LiteLLMClient
from litellm_sync.models import ModelImport
from modelgroups import services as catalog
from modelgroups.models import Model, Upstream

COMPARED = (
    "upstream_model",
    "mode",
    "input_cost_micros",
    "output_cost_micros",
    "input_price_micros",
    "output_price_micros",
    "context_window",
    "max_output_tokens",
)
MODES = {m.value for m in Model.Mode}


@dataclass
class ImportResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # {"name", "reason", "changes": {field: [ours, litellm's]}}: left alone; overwrite to apply
    skipped: list[dict] = field(default_factory=list)
    missing_in_litellm: list[str] = field(default_factory=list)


def _per_mtok_micros(per_token_usd: float | None) -> int:
    """USD per token as micro-USD per 1M tokens."""
    if not per_token_usd:
        return 0
    return int((Decimal(str(per_token_usd)) * 10**12).to_integral_value(ROUND_HALF_UP))


def _values(deployment: Deployment) -> dict:
    values = {
        "upstream_model": deployment.model_name,
        "mode": deployment.mode if deployment.mode in MODES else Model.Mode.CHAT,
        "input_cost_micros": _per_mtok_micros(deployment.input_cost_per_token),
        "output_cost_micros": _per_mtok_micros(deployment.output_cost_per_token),
        "context_window": deployment.max_input_tokens,
    }
    if deployment.max_output_tokens:
        values["max_output_tokens"] = deployment.max_output_tokens
    return values


def _current(model: Model) -> dict:
    return {f: getattr(model, f) for f in COMPARED}


def _client_for(upstream: Upstream) -> LiteLLMClient:
    base = upstream.base_url.rstrip("/").removesuffix("/v1")
    key = decrypt(upstream.api_key_encrypted) if upstream.api_key_encrypted else None
    return LiteLLMClient(base_url=base, master_key=key)  # None: the LITELLM_MASTER_KEY


def models_import(
    *, actor: str, upstream: Upstream, overwrite: list[str] = (), dry_run: bool = False
) -> ImportResult:
    """Bring the upstream's models in line with LiteLLM's /model/info (see the module doc)."""
    if upstream.kind != Upstream.Kind.LITELLM:
        raise ValidationFailed(
            "Only a LiteLLM upstream has a model list to import.",
            fields={"upstream": ["Not of kind litellm."]},
        )
    with _client_for(upstream) as client:
        deployments = client.model_info()  # the one call
    wanted: dict[str, dict] = {}
    for deployment in deployments:
        # Several deployments of one name are LiteLLM's load balancing: one model for us.
        if deployment.model_name and deployment.model_name not in wanted:
            wanted[deployment.model_name] = _values(deployment)
    result = ImportResult()
    existing = {
        m.upstream_model: m
        for m in Model.objects.filter(upstream=upstream).select_related("litellm_import")
    }
    taken = set(Model.objects.exclude(upstream=upstream).values_list("name", flat=True))
    for name, values in sorted(wanted.items()):
        model = existing.get(name)
        if model is None:
            if name in taken:
                result.skipped.append(
                    {"name": name, "reason": "another upstream has a model of that name"}
                )
                continue
            result.created.append(name)
            if not dry_run:
                model = catalog.model_create(actor=actor, name=name, upstream=upstream, **values)
                _remember(model, name)
            continue
        current = _current(model)
        changes = {f: [current[f], v] for f, v in values.items() if current[f] != v}
        if not changes:
            result.unchanged.append(model.name)
            continue
        record = getattr(model, "litellm_import", None)
        edited_here = record is None or any(
            current[f] != record.imported.get(f) for f in COMPARED if f in record.imported
        )
        if edited_here and model.name not in overwrite:
            reason = "edited here since the last import" if record else "not made by an import"
            result.skipped.append({"name": model.name, "reason": reason, "changes": changes})
            continue
        result.updated.append(model.name)
        if not dry_run:
            # A price that followed the old cost follows the new one.
            data = {**values}
            for side in ("input", "output"):
                if record and current[f"{side}_price_micros"] == record.imported.get(
                    f"{side}_price_micros"
                ):
                    data[f"{side}_price_micros"] = None
            catalog.model_update(actor=actor, model=model, data=data)
            _remember(model, name)
    result.missing_in_litellm = sorted(
        m.name for upstream_model, m in existing.items() if upstream_model not in wanted
    )
    return result


def _remember(model: Model, litellm_model: str) -> None:
    model.refresh_from_db()
    with transaction.atomic(durable=True):
        ModelImport.objects.update_or_create(
            model=model, defaults={"litellm_model": litellm_model, "imported": _current(model)}
        )
