"""What a webhook endpoint may be: stated once, enforced by the webhook services, and taken by
the API's serializer and the panel's form for their fields."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import URLValidator

from core.errors import ValidationFailed

# Deliveries are plain HTTP POSTs: any other scheme (javascript:, file:, ftp:) is refused.
WEBHOOK_URL = URLValidator(schemes=["http", "https"])
WEBHOOK_URL_MAX_LENGTH = 500
WEBHOOK_DESCRIPTION_MAX_LENGTH = 200


def validate_webhook(data: dict) -> None:
    """The URL an endpoint is delivered to, and its description, within the rules."""
    if data.get("url") is not None:
        problems = _url_problems(data["url"])
        if problems:
            raise ValidationFailed(f"url: {problems[0]}", fields={"url": problems})
    description = data.get("description")
    if description is not None and len(description) > WEBHOOK_DESCRIPTION_MAX_LENGTH:
        message = f"At most {WEBHOOK_DESCRIPTION_MAX_LENGTH} characters."
        raise ValidationFailed(f"description: {message}", fields={"description": [message]})


def _url_problems(url) -> list[str]:
    if not isinstance(url, str) or len(url) > WEBHOOK_URL_MAX_LENGTH:
        return [f"Enter a valid URL of at most {WEBHOOK_URL_MAX_LENGTH} characters."]
    try:
        WEBHOOK_URL(url)
    except DjangoValidationError as exc:
        return exc.messages
    return []
