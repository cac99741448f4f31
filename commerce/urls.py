from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from backoffice.asyncapi import asyncapi_view
from commerce import api_auth, dashboard, health
from commerce.observability.exporters import metrics_view
from commerce.throttling import admin_login_throttled

handler404 = "commerce.api_errors.not_found"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("health/relay", health.relay_health_view, name="health-relay"),
    path("health/backoffice", health.backoffice_health_view, name="health-backoffice"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/pipeline/", admin.site.admin_view(dashboard.pipeline_dashboard), name="pipeline-dashboard"),
    path(
        "admin/pipeline/order/<int:order_id>/",
        admin.site.admin_view(dashboard.order_trace),
        name="pipeline-order-trace",
    ),
    # Before the admin's own URLs: its login form, with the attempts limited (THROTTLE_LOGIN).
    path("admin/login/", admin_login_throttled(admin.site.login), name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    # The events' AsyncAPI document (docs/asyncapi.yaml), public like the OpenAPI schema.
    path("api/events/schema/", asyncapi_view, name="events-schema"),
    path("api/auth/token/", api_auth.TokenObtainApi.as_view(), name="auth-token"),
    path("api/", include("catalog.api.urls")),
    path("api/", include("orders.api.urls")),
    path("api/", include("payments.api.urls")),
    path("api/backoffice/", include("backoffice.api.urls")),
]
