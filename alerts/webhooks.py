"""The only code that calls customers' webhook endpoints: signing, one POST, a typed outcome.

Every delivery is a POST of a JSON body with these headers:

  Content-Type:          application/json
  X-Tollgate-Event:      the event type, e.g. "budget.threshold_crossed"
  X-Tollgate-Delivery:   the delivery id (whd_…); the same on every retry, so receivers can
                         drop duplicates
  X-Tollgate-Signature:  t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>

A receiver recomputes the HMAC over the raw body bytes with the endpoint's secret, compares it
in constant time, and refuses a timestamp older than a few minutes (a replayed request).
`verify` below does exactly that.

A 2xx answer is success. Network errors, timeouts, 408, 429 and 5xx are retried with backoff;
any other answer (including a redirect, which is not followed) is terminal.
"""

import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from django.conf import settings

SIGNATURE_HEADER = "X-Tollgate-Signature"
EVENT_HEADER = "X-Tollgate-Event"
DELIVERY_HEADER = "X-Tollgate-Delivery"
SIGNING_PREFIX = "whsec_"
# Connect, then the whole answer: a slow receiver costs a worker at most ~15 s per attempt.
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
RETRYABLE_STATUS = {408, 429}


@dataclass(frozen=True)
class SendResult:
    ok: bool
    retryable: bool
    status_code: int | None
    error: str  # empty on success; never holds the secret


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, *, tolerance_s: int = 300, now=None) -> bool:
    """What a receiver does: check the signature and that the timestamp is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class DestinationRefused(Exception):
    pass


def _check_destination(url: str) -> None:
    """Refuse private, loopback and link-local destinations (a webhook URL is chosen by a
    customer; it must not reach our own network). Off in development and tests. A DNS answer
    that changes between this check and the connection is not covered."""
    if settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for info in socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP):
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise DestinationRefused(f"{parts.hostname} resolves to a non-public address.")


def send(url: str, *, secret: str, body: bytes, event_type: str, delivery_id: str) -> SendResult:
    """POST one signed delivery; never raises for a network or HTTP failure."""
    try:
        _check_destination(url)
    except DestinationRefused as exc:
        return SendResult(ok=False, retryable=False, status_code=None, error=str(exc))
    except OSError as exc:  # DNS failure: may well be temporary
        return SendResult(False, True, None, f"could not resolve the host ({exc.strerror})")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Tollgate-Webhooks/1",
        EVENT_HEADER: event_type,
        DELIVERY_HEADER: delivery_id,
        SIGNATURE_HEADER: sign(secret, int(time.time()), body),
    }
    try:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client:
            response = client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        return SendResult(False, True, None, "timed out")
    except httpx.HTTPError as exc:
        return SendResult(False, True, None, f"connection failed ({type(exc).__name__})")
    code = response.status_code
    if 200 <= code < 300:
        return SendResult(True, False, code, "")
    retryable = code >= 500 or code in RETRYABLE_STATUS
    return SendResult(False, retryable, code, f"HTTP {code}: {response.text[:200]}")
