"""What every app's admin shares."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import EmptyResultSet, FieldDoesNotExist, FieldError
from django.db import connections, router
from django.db.models import Model, QuerySet
from django.db.models.sql.query import Query
from django.http import HttpRequest

# Lookups that bind the value as a number of the column's type; a transform (`__year`) or a text
# lookup (`__contains`) is not checked here.
NUMBER_LOOKUPS = {"exact", "iexact", "in", "gt", "gte", "lt", "lte"}

_ModelT = TypeVar("_ModelT", bound=Model)


class BoundedLookupsChangeList(ChangeList):
    """A change list that answers a query-string number no column can hold (`?order=` followed by
    23 nines, `?created_at__year=` too) as an invalid lookup, the admin's redirect to `?e=1`,
    instead of a 500. Django guards a plain integer field's exact and comparison lookups, not a
    foreign key's nor `__in`, and SQLite's driver raises OverflowError past 64 bits when the query
    runs; a year lookup raises while its SQL is built. Checks the lookups no list filter has taken
    (the admin's list filters validate theirs), then builds the SQL once before it runs."""

    def get_filters(self, request: HttpRequest) -> Any:
        filters = super().get_filters(request)
        remaining_lookup_params = filters[2]
        for key, values in remaining_lookup_params.items():
            if _out_of_range(self.model, key, values):
                raise IncorrectLookupParameters(f"{key}: a value no column of that type can hold")
        return filters

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        queryset = super().get_queryset(request, exclude_parameters)
        try:
            queryset.query.get_compiler(queryset.db).as_sql()
        except EmptyResultSet:
            pass  # no row can match: the query answers that itself
        except (OverflowError, ValueError) as exc:
            raise IncorrectLookupParameters(exc) from exc
        return queryset


def _out_of_range(model: type[Model], key: str, values: Any) -> bool:
    query = Query(model)
    try:
        lookups, parts, _ = query.solve_lookup_type(key)
        _, _, targets, _ = query.names_to_path(list(parts), model._meta, fail_on_missing=True)
    except (FieldDoesNotExist, FieldError):
        return False  # the admin's own validation refuses it
    if len(lookups) > 1 or (lookups and lookups[0] not in NUMBER_LOOKUPS):
        return False
    ops = connections[router.db_for_read(model)].ops
    for target in targets:
        column = target
        while column.is_relation and column.target_field is not None:  # a key whose target is a key
            column = column.target_field
        try:
            low, high = ops.integer_field_range(column.get_internal_type())
        except KeyError:
            continue  # not an integer column
        if any(not low <= number <= high for number in _integers(values)):
            return True
    return False


def _integers(values: Any) -> Iterator[int]:
    """The integers among a lookup's values (a list of them; `__in` comes split into a list)."""
    for value in values if isinstance(values, list) else [values]:
        for item in value if isinstance(value, list) else [value]:
            try:
                yield int(item)
            except (TypeError, ValueError):
                continue  # not a number: the admin's own validation refuses it


class BoundedLookupsAdmin(admin.ModelAdmin[_ModelT]):
    """A model admin whose change list refuses integers no column can hold (see above)."""

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return BoundedLookupsChangeList


class ReadOnlyAdmin(BoundedLookupsAdmin):
    """Rows written by services or the consumer only: the admin may view them, never edit.

    Actions still work: each declares the permission it needs (`permissions=`).
    """

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
