"""The LiteLLM integration's page: sync failures, teams and keys LiteLLM has an old copy of,
and the drift between our metering and its spend log (panel.litellm)."""

from django.shortcuts import render

from panel import litellm


def litellm_status(request):
    if not litellm.integration_on():
        return render(request, "panel/litellm.html", {"off": True})
    return render(request, "panel/litellm.html", litellm.details())
