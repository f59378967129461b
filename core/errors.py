"""Domain errors raised by services; the API layer maps each to one status and error type."""


class ServiceError(Exception):
    status = 400
    type = "invalid_request"

    def __init__(self, message: str, *, fields: dict | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


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


class RequestTooLarge(ServiceError):
    status = 413
    type = "request_too_large"


class InsufficientCredits(ServiceError):
    status = 409
    type = "insufficient_credits"


def rule_checked(rule, value, *, error: type[Exception]):
    """Apply a domain rule (one of an app's rules.py) to an input field's parsed value early:
    its refusal is raised as `error` (the serializer's or the form's ValidationError) with the
    service's own words, so the field shows what the service would have said."""
    try:
        rule(value)
    except ServiceError as exc:
        raise error([m for ms in exc.fields.values() for m in ms] or [exc.message]) from None
    return value
