from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import selectors, services
from catalog.models import Product
from commerce.api_auth import AuthenticatedRequest
from commerce.api_schema import BAD_REQUEST, NOT_FOUND, UNAUTHORIZED, paginated
from commerce.pagination import paginate

PRODUCT_CACHE_SECONDS = 300


class ProductOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Product
        fields = ["id", "name", "price", "stock", "stock_version"]


LikeOutputSerializer = inline_serializer(
    name="LikeResult",
    fields={
        "product_id": serializers.IntegerField(),
        "liked": serializers.BooleanField(),
        "changed": serializers.BooleanField(help_text="false when it was already so"),
    },
)


class ProductListApi(APIView):
    permission_classes = [AllowAny]

    class FilterSerializer(serializers.Serializer):
        name = serializers.CharField(required=False, max_length=200)

    @extend_schema(
        operation_id="products_list",
        parameters=[
            OpenApiParameter("name", str, description="case-insensitive part of the name"),
            OpenApiParameter("page", int),
        ],
        responses={200: paginated(ProductOutputSerializer, "ProductPage"), 400: BAD_REQUEST, 404: NOT_FOUND},
    )
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        products = selectors.product_list(name=filters.validated_data.get("name"))
        return paginate(request=request, queryset=products, serializer_class=ProductOutputSerializer, view=self)


class ProductDetailApi(APIView):
    """A product's detail; every read is recorded as a product view (ProductViewed)."""

    permission_classes = [AllowAny]

    @extend_schema(operation_id="products_retrieve", responses={200: ProductOutputSerializer, 404: NOT_FOUND})
    def get(self, request: Request, product_id: int) -> Response:
        cache_key = settings.PRODUCT_CACHE_KEY.format(product_id=product_id)
        data = cache.get(cache_key)
        if data is None:
            product = selectors.product_get(product_id=product_id)
            data = ProductOutputSerializer(product).data
            cache.set(cache_key, data, PRODUCT_CACHE_SECONDS)
        try:
            services.product_view_record(user=request.user, product_id=product_id)
        except Product.DoesNotExist:
            cache.delete(cache_key)  # deleted since it was cached; the handler answers 404
            raise
        return Response(data)


class ProductLikeApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="products_like",
        request=None,
        responses={200: LikeOutputSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
    )
    def put(self, request: AuthenticatedRequest, product_id: int) -> Response:
        changed = services.product_like(user=request.user, product_id=product_id)
        return Response({"product_id": product_id, "liked": True, "changed": changed})

    @extend_schema(
        operation_id="products_unlike",
        request=None,
        responses={200: LikeOutputSerializer, 401: UNAUTHORIZED, 404: NOT_FOUND},
    )
    def delete(self, request: AuthenticatedRequest, product_id: int) -> Response:
        changed = services.product_unlike(user=request.user, product_id=product_id)
        return Response({"product_id": product_id, "liked": False, "changed": changed})
