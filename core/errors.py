"""Domain errors raised by services; the API layer maps each to one status and error type."""


class ServiceError(Exception):
    status = 400
    type = "invalid_request"

    def __init__(self, message: str, *, fields: dict | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}

    def field_messages(self) -> list[str]:
        """Every field message, or the message when there are none: what an adapter shows
        under the one field it asked a rule about."""
        return [m for messages in self.fields.values() for m in messages] or [self.message]


class ValidationFailed(ServiceError):
    status = 400
    type = "validation_error"


class Conflict(ServiceError):
    status = 409
    type = "conflict"


class NotFound(ServiceError):
    status = 404
    type = "not_found"


class Forbidden(ServiceError):
    status = 403
    type = "permission_denied"


class InsufficientCredits(ServiceError):
    status = 409
    type = "insufficient_credits"
