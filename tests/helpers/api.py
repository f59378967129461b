"""The admin API as its clients see it."""

from rest_framework.test import APIClient

# The platform admin's master key in tests (the autouse settings fixture installs it).
MASTER = "tgm-test-master-key"


def client_with(secret: str | None) -> APIClient:
    """An admin API client authenticated with `secret` (none: anonymous)."""
    client = APIClient()
    if secret is not None:
        client.credentials(HTTP_X_ADMIN_KEY=secret)
    return client


def assert_api_error(response, status: int, type_: str, *, with_fields: bool = False) -> dict:
    """The admin API's error shape: JSON, a type and a message (and, for a rejected input,
    the offending fields)."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == type_
    assert error["message"].strip()
    if with_fields:
        assert isinstance(error["fields"], dict)
    return error
