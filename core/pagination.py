"""Kept apart from core.api: DRF imports the pagination class while loading generics."""

from rest_framework import pagination


class Pagination(pagination.CursorPagination):
    """Cursor pagination: constant cost per page however deep, so lists stay fast at 100k rows."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 500
