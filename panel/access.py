"""Who may use the panel: platform admins change things, viewers only look."""

ADMIN = "admin"  # a superuser, or a member of the `admin` group
VIEWER = "viewer"  # a member of the `viewer` group: every page, no change


def role_of(user) -> str | None:
    """The user's panel role; None for anyone else (logged in or not)."""
    if not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return ADMIN
    groups = set(user.groups.filter(name__in=(ADMIN, VIEWER)).values_list("name", flat=True))
    if ADMIN in groups:
        return ADMIN
    if VIEWER in groups:
        return VIEWER
    return None


def actor_for(user) -> str:
    """How the audit log names a panel user."""
    return f"user:{user.get_username()}"


def public(view):
    """Mark a panel view as open to anonymous visitors (the login page)."""
    view.panel_public = True
    return view


def any_role_may_post(view):
    """Mark a view whose POST changes only the user's own session or password, not the
    business, so a viewer may use it too (log out, change password)."""
    view.panel_any_role_post = True
    return view
