from __future__ import annotations

from decimal import Decimal

import pytest

from backoffice.models import ProductMetrics
from tests.factories import token_for, user_make

pytestmark = pytest.mark.django_db


def test_staff_reads_metrics_ordered_by_sales_likes_or_views(api_client):
    ProductMetrics.objects.create(product_id="1", like_count=5, view_count=1, sales_amount=Decimal("10"))
    ProductMetrics.objects.create(product_id="2", like_count=1, view_count=9, sales_amount=Decimal("99"))
    api_client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user_make(is_staff=True))}")
    by = {
        o: [m["product_id"] for m in api_client.get("/api/backoffice/metrics/", {"ordering": o}).json()["results"]]
        for o in ("sales", "likes", "views")
    }
    assert by == {"sales": ["2", "1"], "likes": ["1", "2"], "views": ["2", "1"]}
    assert api_client.get("/api/backoffice/metrics/", {"ordering": "nonsense"}).status_code == 400
    for path in ("ledger", "events", "deadletters"):
        assert api_client.get(f"/api/backoffice/{path}/").status_code == 200
