from __future__ import annotations

from django.urls import path

from payments.api import views

urlpatterns = [
    path("payments/", views.PaymentRequestApi.as_view(), name="payment-request"),
    path("payments/<int:payment_id>/", views.PaymentDetailApi.as_view(), name="payment-detail"),
    path("payments/callback/", views.PaymentCallbackApi.as_view(), name="payment-callback"),
]
