from __future__ import annotations

from django.urls import path

from backoffice.api import views

urlpatterns = [
    path("metrics/", views.ProductMetricsListApi.as_view(), name="backoffice-metrics"),
    path("ledger/", views.OrderLedgerListApi.as_view(), name="backoffice-ledger"),
    path("events/", views.EventLogListApi.as_view(), name="backoffice-events"),
    path("deadletters/", views.DeadLetterListApi.as_view(), name="backoffice-deadletters"),
]
