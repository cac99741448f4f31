import django_stubs_ext

from commerce.celery import app as celery_app

# Django's generic classes subscriptable at run time as the type checker writes them
# (`admin.ModelAdmin[OutboxEvent]` in a base class list): first thing, before any app loads.
django_stubs_ext.monkeypatch()

__all__ = ("celery_app",)
