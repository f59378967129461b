from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from alerts import api as alerts_api
from billing import api as billing_api
from litellm_sync import api as litellm_api
from modelgroups import api as mg_api
from ops import health
from ops import metrics as metrics_view
from orgs import api as orgs_api
from teams import api as teams_api

api_patterns = [
    path("organizations/", orgs_api.OrganizationList.as_view()),
    path("organizations/<str:id>/", orgs_api.OrganizationDetail.as_view()),
    path("organizations/<str:id>/usage/", billing_api.OrganizationUsage.as_view()),
    path("teams/", teams_api.TeamList.as_view()),
    path("teams/<str:id>/", teams_api.TeamDetail.as_view()),
    path("teams/<str:id>/suspend/", teams_api.TeamSuspend.as_view()),
    path("teams/<str:id>/resume/", teams_api.TeamResume.as_view()),
    path("teams/<str:id>/pause/", teams_api.TeamPause.as_view()),
    path("teams/<str:id>/keys/", teams_api.TeamKeyList.as_view()),
    path("teams/<str:id>/credits/", billing_api.TeamCredits.as_view()),
    path("teams/<str:id>/credits/grant/", billing_api.CreditGrant.as_view()),
    path("teams/<str:id>/credits/adjust/", billing_api.CreditAdjust.as_view()),
    path("teams/<str:id>/ledger/", billing_api.TeamLedger.as_view()),
    path("teams/<str:id>/usage/", billing_api.TeamUsage.as_view()),
    path("teams/<str:id>/calls/", billing_api.TeamCalls.as_view()),
    path("teams/<str:id>/jobs/", billing_api.TeamJobs.as_view()),
    path("jobs/<str:id>/", billing_api.JobDetail.as_view()),
    path("calls/<str:id>/", billing_api.CallDetail.as_view()),
    path("teams/<str:id>/alerts/", alerts_api.TeamAlerts.as_view()),
    path("keys/<str:id>/", teams_api.KeyDetail.as_view()),
    path("keys/<str:id>/rotate/", teams_api.KeyRotate.as_view()),
    path("upstreams/", mg_api.UpstreamList.as_view()),
    path("upstreams/<str:id>/", mg_api.UpstreamDetail.as_view()),
    path("upstreams/<str:id>/import-models/", litellm_api.UpstreamModelImport.as_view()),
    path("litellm/drift/", litellm_api.LiteLLMDrift.as_view()),
    path("models/", mg_api.ModelList.as_view()),
    path("models/<str:id>/", mg_api.ModelDetail.as_view()),
    path("models/<str:id>/check/", mg_api.ModelCheck.as_view()),
    path("model-groups/", mg_api.ModelGroupList.as_view()),
    path("model-groups/<str:id>/", mg_api.ModelGroupDetail.as_view()),
    path("webhooks/", alerts_api.WebhookList.as_view()),
    path("webhooks/<str:id>/", alerts_api.WebhookDetail.as_view()),
    path("webhooks/<str:id>/rotate-secret/", alerts_api.WebhookRotateSecret.as_view()),
    path("webhooks/<str:id>/deliveries/", alerts_api.WebhookDeliveryList.as_view()),
    path("admin-keys/", orgs_api.AdminKeyList.as_view()),
    path("admin-keys/<str:id>/", orgs_api.AdminKeyDetail.as_view()),
    path("audit-events/", orgs_api.AuditEventList.as_view()),
    path(
        "schema/",
        SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]),
        name="schema",
    ),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(
            url_name="schema", authentication_classes=[], permission_classes=[]
        ),
        name="docs",
    ),
]

urlpatterns = [
    path("api/", include(api_patterns)),
    path("django-admin/", admin.site.urls),
    path("health/live", health.live),
    path("health/ready", health.ready),
    path("metrics", metrics_view.metrics),
    # The web panel owns everything else, so it comes last.
    path("", include("panel.urls")),
]

handler404 = "core.api.json_not_found"
handler500 = "core.api.json_server_error"
