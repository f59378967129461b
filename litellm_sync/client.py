"""The only code that speaks to LiteLLM's admin API (pinned: litellm[proxy]==1.106.2).

Every call has explicit timeouts and ends in a typed result or one of two errors:
LiteLLMUnavailable (retry later: connection refused, timeout, 5xx, 429) or LiteLLMRejected
(LiteLLM understood and refused: a 4xx in one of its error shapes; retrying changes nothing).

The master key goes only into the Authorization header, and key secrets only into request
bodies; neither is ever logged or put into an exception message. Keys are addressed by their
SHA-256 hash wherever LiteLLM allows it, so plaintext stays out of its access logs too.
See ../shared/reference/litellm-admin-api.md (or docs/litellm.md) for the API this follows.
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from django.conf import settings

from core.redaction import Redactor

logger = logging.getLogger(__name__)

SPEND_LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class LiteLLMError(Exception):
    """A LiteLLM call that did not succeed; `message` is safe to store and show."""

    def __init__(self, message: str, *, status: int | None = None, type_: str = "", param=None):
        super().__init__(message)
        self.message, self.status, self.type, self.param = message, status, type_, param

    def __str__(self) -> str:
        prefix = f"HTTP {self.status}" if self.status else "no answer"
        kind = f" {self.type}" if self.type else ""
        return f"LiteLLM {prefix}{kind}: {self.message}"


class LiteLLMUnavailable(LiteLLMError):
    """Retryable: LiteLLM is down, slow, overloaded or failing on its side."""


class LiteLLMRejected(LiteLLMError):
    """Terminal: LiteLLM refused the request (4xx); the same request will fail again."""

    @property
    def not_found(self) -> bool:
        return self.status == 404 or self.type in ("not_found_error", "token_not_found_in_db")

    @property
    def already_exists(self) -> bool:
        # Duplicate key alias (param key_alias) or team id: "... already exists ..."
        return self.status == 400 and "already exists" in self.message


class LiteLLMNotConfigured(LiteLLMError):
    """LITELLM_BASE_URL or LITELLM_MASTER_KEY is unset: the integration is off."""


def enabled() -> bool:
    return bool(settings.LITELLM_BASE_URL and settings.LITELLM_MASTER_KEY)


# --- typed results ---------------------------------------------------------------------


def _float(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _time(value) -> datetime | None:
    """LiteLLM's timestamps: ISO 8601 with or without zone (UTC when naive)."""
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TeamInfo:
    team_id: str
    alias: str | None
    blocked: bool
    models: list[str]
    max_budget: float | None  # USD
    spend: float  # USD, the current budget window (lifetime without budget_duration)
    budget_duration: str | None
    rpm_limit: int | None
    tpm_limit: int | None
    max_parallel_requests: int | None
    metadata: dict

    @classmethod
    def from_json(cls, row: dict) -> "TeamInfo":
        return cls(
            team_id=row.get("team_id") or "",
            alias=row.get("team_alias"),
            blocked=bool(row.get("blocked")),
            models=list(row.get("models") or []),
            max_budget=_float(row.get("max_budget")),
            spend=_float(row.get("spend")) or 0.0,
            budget_duration=row.get("budget_duration"),
            rpm_limit=row.get("rpm_limit"),
            tpm_limit=row.get("tpm_limit"),
            max_parallel_requests=row.get("max_parallel_requests"),
            metadata=row.get("metadata") or {},
        )


@dataclass(frozen=True)
class KeyInfo:
    key_hash: str
    alias: str | None
    team_id: str | None
    status: str  # active | expired | revoked | deleted ("active" when LiteLLM omits it)
    blocked: bool
    models: list[str]
    max_budget: float | None
    spend: float
    total_spend: float | None  # lifetime; never reset by budget windows
    expires: datetime | None
    metadata: dict

    @classmethod
    def from_json(cls, row: dict, key_hash: str = "") -> "KeyInfo":
        return cls(
            key_hash=row.get("token") or key_hash,
            alias=row.get("key_alias"),
            team_id=row.get("team_id"),
            status=row.get("status") or "active",
            blocked=bool(row.get("blocked")),
            models=list(row.get("models") or []),
            max_budget=_float(row.get("max_budget")),
            spend=_float(row.get("spend")) or 0.0,
            total_spend=_float(row.get("total_spend")),
            expires=_time(row.get("expires")),
            metadata=row.get("metadata") or {},
        )


@dataclass(frozen=True)
class SpendRow:
    request_id: str
    call_id: str  # litellm_call_id: our request id when the gateway sent x-litellm-call-id
    key_hash: str
    team_id: str
    model: str
    model_group: str
    spend: float  # USD
    prompt_tokens: int
    completion_tokens: int
    started_at: datetime | None
    status: str
    key_alias: str

    @classmethod
    def from_json(cls, row: dict) -> "SpendRow":
        metadata = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
        return cls(
            request_id=str(row.get("request_id") or ""),
            call_id=str(row.get("litellm_call_id") or ""),
            key_hash=str(row.get("api_key") or ""),
            team_id=str(row.get("team_id") or ""),
            model=str(row.get("model") or ""),
            model_group=str(row.get("model_group") or ""),
            spend=_float(row.get("spend")) or 0.0,
            prompt_tokens=int(row.get("prompt_tokens") or 0),
            completion_tokens=int(row.get("completion_tokens") or 0),
            started_at=_time(row.get("startTime")),
            status=str(row.get("status") or "success"),
            key_alias=str(metadata.get("user_api_key_alias") or ""),
        )


@dataclass(frozen=True)
class SpendLogPage:
    rows: list[SpendRow]
    page: int
    total_pages: int
    total: int
    capped: bool  # more than LiteLLM counts (10,000): split the window


@dataclass(frozen=True)
class Deployment:
    """One entry of /model/info: a model name customers call and what serves it."""

    model_name: str
    model_id: str
    provider_model: str  # litellm_params.model, e.g. openai/gpt-4o-mini
    mode: str
    input_cost_per_token: float | None  # USD
    output_cost_per_token: float | None
    max_input_tokens: int | None
    max_output_tokens: int | None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, row: dict) -> "Deployment":
        params = row.get("litellm_params") or {}
        info = row.get("model_info") or {}

        def cost(name):
            value = info.get(name)
            return _float(params.get(name) if value is None else value)

        return cls(
            model_name=str(row.get("model_name") or ""),
            model_id=str(info.get("id") or ""),
            provider_model=str(params.get("model") or ""),
            mode=str(info.get("mode") or "chat"),
            input_cost_per_token=cost("input_cost_per_token"),
            output_cost_per_token=cost("output_cost_per_token"),
            max_input_tokens=info.get("max_input_tokens"),
            max_output_tokens=info.get("max_output_tokens") or info.get("max_tokens"),
        )


# --- the client ------------------------------------------------------------------------


def _message(body: Any) -> tuple[str, str, Any]:
    """(message, type, param) out of any of LiteLLM's error shapes:
    {"error": {message, type, param, code}}, {"detail": {...} | str}, {"error": str}."""
    if not isinstance(body, dict):
        return (str(body)[:300] if body else "", "", None)
    inner = body.get("error", body.get("detail", body))
    if isinstance(inner, dict):
        message = inner.get("message", inner.get("error", inner))
        if isinstance(message, dict):  # a ProxyException wrapping an HTTPException's detail
            message = message.get("error") or message.get("message") or message
        return (str(message)[:500], str(inner.get("type") or ""), inner.get("param"))
    return (str(inner)[:500], "", None)


class LiteLLMClient:
    """A synchronous client for Celery tasks and management commands; use as a context
    manager (one connection pool per task run)."""

    def __init__(self, base_url: str | None = None, master_key: str | None = None):
        base_url = base_url if base_url is not None else settings.LITELLM_BASE_URL
        master_key = master_key if master_key is not None else settings.LITELLM_MASTER_KEY
        if not (base_url and master_key):
            raise LiteLLMNotConfigured("LITELLM_BASE_URL and LITELLM_MASTER_KEY are not both set.")
        self._redact = Redactor([master_key])
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {master_key}",
                # Recorded in LiteLLM's audit log: these changes come from Tollgate's sync.
                "litellm-changed-by": "tollgate",
            },
            timeout=httpx.Timeout(
                settings.LITELLM_TIMEOUT_SECONDS, connect=settings.LITELLM_CONNECT_TIMEOUT_SECONDS
            ),
            follow_redirects=False,
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, *, json=None, params=None) -> Any:
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.TimeoutException as exc:
            raise LiteLLMUnavailable(f"{method} {path} timed out ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise LiteLLMUnavailable(f"{method} {path} failed ({type(exc).__name__})") from None
        try:
            body = response.json()
        except ValueError:
            body = response.text
        status = response.status_code
        if status < 300:
            if not isinstance(body, dict | list):
                raise LiteLLMUnavailable(f"{method} {path} answered non-JSON", status=status)
            return body
        message, type_, param = _message(body)
        # Anything that looks like a key, in a message LiteLLM sends back (it quotes key names),
        # and the master key it was sent; push.py also removes every stored provider key.
        message = self._redact(message) or f"{method} {path}"
        error = LiteLLMUnavailable if status >= 500 or status == 429 else LiteLLMRejected
        raise error(message, status=status, type_=type_, param=param)

    # --- teams -------------------------------------------------------------------------

    def team_info(self, team_id: str) -> TeamInfo | None:
        """The team, or None when LiteLLM has no such team."""
        try:
            body = self._call("GET", "/team/info", params={"team_id": team_id})
        except LiteLLMRejected as exc:
            if exc.not_found:
                return None
            raise
        info = body.get("team_info") or {}
        return TeamInfo.from_json({"team_id": team_id, **info})

    def team_new(self, fields: dict) -> TeamInfo:
        return TeamInfo.from_json(self._call("POST", "/team/new", json=fields))

    def team_update(self, fields: dict) -> None:
        self._call("POST", "/team/update", json=fields)

    def team_delete(self, team_ids: list[str]) -> None:
        """Deletes the teams and their keys; a team already gone is not an error."""
        try:
            self._call("POST", "/team/delete", json={"team_ids": team_ids})
        except LiteLLMRejected as exc:
            if not exc.not_found:
                raise

    # --- keys --------------------------------------------------------------------------

    def key_info(self, key_hash: str) -> KeyInfo | None:
        """The key by its SHA-256 hash (also when deleted: status "deleted"), or None."""
        try:
            body = self._call("GET", "/key/info", params={"key": key_hash})
        except LiteLLMRejected as exc:
            if exc.not_found:
                return None
            raise
        return KeyInfo.from_json(body.get("info") or {}, key_hash)

    def key_generate(self, fields: dict) -> None:
        """Create a key; `fields["key"]` is the caller-chosen secret. The response (which
        echoes the secret) is dropped here so it cannot travel further."""
        self._call("POST", "/key/generate", json=fields)

    def key_update(self, fields: dict) -> None:
        self._call("POST", "/key/update", json=fields)

    def key_delete(self, key_hashes: list[str]) -> None:
        """Delete keys by hash; keys already gone are not an error."""
        try:
            self._call("POST", "/key/delete", json={"keys": key_hashes})
        except LiteLLMRejected as exc:
            if not exc.not_found:
                raise

    def key_list(self, *, team_id: str | None = None, page: int = 1, size: int = 100) -> dict:
        """One page of full key rows: {"keys": [KeyInfo], "total_pages": n}."""
        params: dict = {"page": page, "size": size, "return_full_object": "true"}
        if team_id:
            params["team_id"] = team_id
        body = self._call("GET", "/key/list", params=params)
        keys = [
            KeyInfo.from_json(k) if isinstance(k, dict) else KeyInfo.from_json({}, str(k))
            for k in body.get("keys") or []
        ]
        return {"keys": keys, "total_pages": int(body.get("total_pages") or 1)}

    # --- models and spend ----------------------------------------------------------------

    def model_info(self) -> list[Deployment]:
        body = self._call("GET", "/model/info")
        return [Deployment.from_json(row) for row in body.get("data") or []]

    def spend_logs(
        self, *, start: datetime, end: datetime, page: int = 1, page_size: int = 1000
    ) -> SpendLogPage:
        """One page of /spend/logs/v2, oldest first, for startTime in [start, end] (UTC)."""
        body = self._call(
            "GET",
            "/spend/logs/v2",
            params={
                "start_date": start.astimezone(UTC).strftime(SPEND_LOG_TIME_FORMAT),
                "end_date": end.astimezone(UTC).strftime(SPEND_LOG_TIME_FORMAT),
                "sort_by": "startTime",
                "sort_order": "asc",
                "page": page,
                "page_size": page_size,
            },
        )
        return SpendLogPage(
            rows=[SpendRow.from_json(r) for r in body.get("data") or []],
            page=int(body.get("page") or page),
            total_pages=int(body.get("total_pages") or 0),
            total=int(body.get("total") or 0),
            capped=bool(body.get("total_is_capped")),
        )
