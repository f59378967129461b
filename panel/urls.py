from django.urls import path

from panel.views import audit, auth, catalog, dashboard, keys, orgs, teams, usage

app_name = "panel"

urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("login/", auth.login, name="login"),
    path("logout/", auth.logout, name="logout"),
    path("password/", auth.password_change, name="password_change"),
    path("organizations/", orgs.org_list, name="org_list"),
    path("organizations/new/", orgs.org_create, name="org_create"),
    path("organizations/<str:id>/", orgs.org_detail, name="org_detail"),
    path("organizations/<str:id>/delete/", orgs.org_delete, name="org_delete"),
    path("teams/", teams.team_list, name="team_list"),
    path("teams/new/", teams.team_create, name="team_create"),
    path("teams/<str:id>/", teams.team_detail, name="team_detail"),
    path("teams/<str:id>/edit/", teams.team_edit, name="team_edit"),
    path("teams/<str:id>/status/<str:action>/", teams.team_status, name="team_status"),
    path("teams/<str:id>/credits/", teams.team_credits, name="team_credits"),
    path("teams/<str:id>/ledger/", teams.team_ledger, name="team_ledger"),
    path("teams/<str:id>/keys/new/", keys.key_create, name="team_key_create"),
    path("keys/", keys.key_list, name="key_list"),
    path("keys/<str:id>/", keys.key_detail, name="key_detail"),
    path("keys/<str:id>/rotate/", keys.key_rotate, name="key_rotate"),
    path("keys/<str:id>/revoke/", keys.key_revoke, name="key_revoke"),
    path("model-groups/", catalog.group_list, name="group_list"),
    path("model-groups/new/", catalog.group_create, name="group_create"),
    path("model-groups/<str:id>/", catalog.group_edit, name="group_edit"),
    path("model-groups/<str:id>/delete/", catalog.group_delete, name="group_delete"),
    path("models/", catalog.model_list, name="model_list"),
    path("models/new/", catalog.model_create, name="model_create"),
    path("models/<str:id>/", catalog.model_edit, name="model_edit"),
    path("models/<str:id>/delete/", catalog.model_delete, name="model_delete"),
    path("upstreams/", catalog.upstream_list, name="upstream_list"),
    path("upstreams/new/", catalog.upstream_create, name="upstream_create"),
    path("upstreams/<str:id>/", catalog.upstream_edit, name="upstream_edit"),
    path("upstreams/<str:id>/test/", catalog.upstream_test, name="upstream_test"),
    path("upstreams/<str:id>/delete/", catalog.upstream_delete, name="upstream_delete"),
    path("usage/", usage.usage, name="usage"),
    path("audit/", audit.audit, name="audit"),
]
