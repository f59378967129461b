"""Upstream kinds: which APIs an upstream speaks natively, where, and with which headers.

One `Provider` per kind (modelgroups.Upstream.Kind), looked up by `provider(kind)`. A route
keeps its upstream's kind; the call's API (proxy/apis) asks the provider whether it speaks the
API natively and otherwise looks for a translation into one it does.
"""

from proxy.providers.anthropic import ANTHROPIC
from proxy.providers.azure import AZURE
from proxy.providers.openai import OPENAI, Provider

PROVIDERS: dict[str, Provider] = {
    "openai": OPENAI,
    "litellm": OPENAI,
    "mock": OPENAI,
    "azure_openai": AZURE,
    "anthropic": ANTHROPIC,
}


def provider(kind: str) -> Provider:
    return PROVIDERS.get(kind, OPENAI)
