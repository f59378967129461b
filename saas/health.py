"""Liveness: the process answers. Readiness (dependencies) lives with the workers issue."""

from django.http import JsonResponse


def live(request):
    return JsonResponse({"status": "ok"})
