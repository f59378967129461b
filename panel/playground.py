"""The playground's one call through the real gateway, as a team.

The panel cannot call as a customer's key: only hashes are stored. So each prompt mints its own
key for the team (teams.services.key_create, audited as the panel user): clearly named,
restricted to the chosen model group, expiring within minutes. The secret lives in this
coroutine's memory only, is sent once to the gateway over HTTP (so admission, limits, metering
and settlement are exactly a customer's), and the key is revoked as soon as the answer ends.
If the process dies mid-call, the expiry stops the key anyway.

Yields the panel's own small events (start, delta, usage, error, end); views turn them into
Server-Sent Events for the page's script, or into a streamed HTML page without one."""

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from core.errors import ServiceError
from teams import services

logger = logging.getLogger(__name__)

KEY_LIFETIME = timedelta(minutes=5)
CONNECT_TIMEOUT = 5.0  # seconds: the gateway is this very server, or next to it
READ_TIMEOUT = 300.0  # seconds between two pieces of the answer (slow models think first)


@dataclass(frozen=True)
class Event:
    kind: str  # start | delta | usage | error | end
    data: dict


def gateway_url(request) -> str:
    """Where the gateway listens: PANEL_GATEWAY_URL, else the server this request came to
    (the same ASGI application serves /v1)."""
    if settings.PANEL_GATEWAY_URL:
        return settings.PANEL_GATEWAY_URL.rstrip("/")
    scope = getattr(request, "scope", None) or {}
    host, port = scope.get("server") or (
        request.META.get("SERVER_NAME"),
        request.META.get("SERVER_PORT"),
    )
    if host in (None, "", "0.0.0.0", "::"):  # noqa: S104 - listening everywhere: loop back
        host = "127.0.0.1"
    if ":" in str(host):
        host = f"[{host}]"
    return f"{scope.get('scheme', 'http')}://{host}:{port}"


def _key_mint(*, actor: str, username: str, team, group):
    return services.key_create(
        actor=actor,
        team=team,
        name=f"playground: {username}"[:200],
        model_groups=[group],
        expires_at=timezone.now() + KEY_LIFETIME,
        metadata={"playground": True, "created_by": actor},
    )


def _key_retire(*, actor: str, key) -> None:
    services.key_revoke(actor=actor, key=key)


async def call_events(
    *, actor: str, username: str, team, group, messages: list, max_tokens: int, base_url: str
) -> AsyncIterator[Event]:
    """Mint the key, stream the answer from the gateway, revoke the key."""
    try:
        key, secret = await sync_to_async(_key_mint)(
            actor=actor, username=username, team=team, group=group
        )
    except ServiceError as exc:
        yield Event("error", {"message": exc.message})
        return
    try:
        body = {
            "model": group.name,
            "messages": messages,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        headers = {"Authorization": f"Bearer {secret}"}
        del secret  # only the header holds it now
        async for event in _stream(base_url, body, headers):
            yield event
    finally:
        # Shielded: a browser that went away cancels the stream, not the revocation.
        try:
            await asyncio.shield(sync_to_async(_key_retire)(actor=actor, key=key))
        except Exception:  # the key still expires by itself within KEY_LIFETIME
            logger.exception("playground: revoking key %s failed", key.public_id)


async def _stream(base_url: str, body: dict, headers: dict) -> AsyncIterator[Event]:
    url = f"{base_url}/v1/chat/completions"
    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    finish = None
    try:
        async with (
            httpx.AsyncClient(timeout=timeout) as client,
            client.stream("POST", url, json=body, headers=headers) as response,
        ):
            rid = response.headers.get("x-request-id", "")
            if response.status_code != 200:
                raw = await response.aread()
                yield Event(
                    "error",
                    {
                        "status": response.status_code,
                        "message": _error_message(raw, response.status_code),
                        "request_id": rid,
                    },
                )
                return
            yield Event(
                "start",
                {
                    "request_id": rid,
                    "model": response.headers.get("x-tollgate-model", ""),
                    "cache": response.headers.get("x-cache", ""),
                },
            )
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                try:
                    chunk = json.loads(payload)
                except ValueError:
                    continue
                if not isinstance(chunk, dict):
                    continue
                if isinstance(chunk.get("error"), dict):  # the upstream failed mid-answer
                    message = chunk["error"].get("message") or "The answer broke off."
                    yield Event("error", {"message": str(message), "request_id": rid})
                    return
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield Event("delta", {"text": text})
                    finish = choice.get("finish_reason") or finish
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    yield Event(
                        "usage",
                        {
                            "input_tokens": usage.get("prompt_tokens", 0),
                            "output_tokens": usage.get("completion_tokens", 0),
                        },
                    )
            yield Event("end", {"request_id": rid, "finish_reason": finish or ""})
    except httpx.TimeoutException:
        yield Event("error", {"message": f"The gateway sent nothing for {READ_TIMEOUT:g} s."})
    except httpx.HTTPError as exc:
        yield Event(
            "error",
            {"message": f"Could not reach the gateway at {base_url}: {type(exc).__name__}."},
        )


def _error_message(raw: bytes, status: int) -> str:
    """The gateway's error message (OpenAI's error shape), else the status."""
    try:
        error = json.loads(raw).get("error") or {}
        return str(error.get("message") or f"HTTP {status}")
    except (ValueError, AttributeError):
        return f"The gateway answered HTTP {status}."
