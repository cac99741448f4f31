from __future__ import annotations

from django.urls import path

from catalog.api import views

urlpatterns = [
    path("products/", views.ProductListApi.as_view(), name="product-list"),
    path("products/<int:product_id>/", views.ProductDetailApi.as_view(), name="product-detail"),
    path("products/<int:product_id>/like/", views.ProductLikeApi.as_view(), name="product-like"),
]
