"""Template context for every panel page: the user's role and the navigation."""

from panel.access import ADMIN, role_of

NAV = [
    ("dashboard", "Dashboard"),
    ("org_list", "Organizations"),
    ("team_list", "Teams"),
    ("key_list", "Keys"),
    ("group_list", "Model groups"),
    ("model_list", "Models"),
    ("upstream_list", "Upstreams"),
    ("usage", "Usage"),
    ("logs", "Logs"),
    ("playground", "Playground"),
    ("webhook_list", "Webhooks"),
    ("audit", "Audit log"),
]
# Pages that belong to a navigation entry their name does not start with.
SECTIONS = {"job_detail": "team_list", "call_detail": "logs"}


def panel(request):
    if not hasattr(request, "panel_role"):
        try:
            request.panel_role = role_of(request.user)
        except Exception:  # an error page for a broken database must still render
            request.panel_role = None
    match = getattr(request, "resolver_match", None)
    section = getattr(match, "url_name", "") or ""
    return {
        "panel_role": request.panel_role,
        "can_write": request.panel_role == ADMIN,
        "panel_nav": NAV,
        "panel_section": _section(section),
    }


def _section(url_name: str) -> str:
    """Which navigation entry a page belongs to: team_detail -> team_list."""
    if url_name in SECTIONS:
        return SECTIONS[url_name]
    for name, _ in NAV:
        if url_name == name or url_name.startswith(name.removesuffix("_list") + "_"):
            return name
    return url_name
