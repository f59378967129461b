"""API secrets: generation, hashing at rest, constant-time checks, provider-key encryption."""

import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# What we keep for display and lookup: "sk-" plus 9 random characters. Not secret on its own.
LOOKUP_PREFIX_LEN = 12


def generate_secret(prefix: str) -> str:
    # 32 random bytes = 256 bits, far above the 128-bit floor.
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    # Unsalted SHA-256 is the right tool for 256-bit random secrets (no dictionary to attack),
    # and it is the exact hash LiteLLM stores, so its spend logs can be matched to our keys.
    return hashlib.sha256(secret.encode()).hexdigest()


def lookup_prefix(secret: str) -> str:
    return secret[:LOOKUP_PREFIX_LEN]


def hashes_match(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def _fernet() -> MultiFernet:
    keys = settings.SECRETS_ENCRYPTION_KEYS
    if not keys:
        raise ImproperlyConfigured(
            "SECRETS_ENCRYPTION_KEYS is empty: set it (python -c 'from cryptography.fernet "
            "import Fernet; print(Fernet.generate_key().decode())') to store provider keys."
        )
    return MultiFernet([Fernet(k) for k in keys])


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode() if plaintext else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ImproperlyConfigured(
            "A stored provider key cannot be decrypted with SECRETS_ENCRYPTION_KEYS; "
            "was the key rotated without keeping the old one listed?"
        ) from exc
