"""The SDK's errors: one per answer a caller handles differently.

::

    KinemaClientError                 anything this SDK raises on purpose
    ├── ConnectionFailed              the server could not be reached (after the retries)
    ├── WebhookVerificationError      a webhook's signature or timestamp does not check out
    └── APIError                      the server answered an error (status, message, request_id)
        ├── InvalidRequest      400   a parameter breaks a rule (also raised locally by builders)
        ├── Unauthorized        401   missing, unknown or revoked key
        ├── Forbidden           403   key not permitted for the model
        ├── NotFound            404   unknown model or request id (or another key's), expired
        ├── InsufficientCredits 406   the balance cannot cover the price
        ├── Conflict            409   Idempotency-Key reused with another body
        ├── GenerationFailed    422   the generation ran and failed (refunded)
        ├── RateLimited         429   over the key's limit; ``retry_after`` seconds
        ├── GenerationTimeout   504   the wait ran out (server's sync wait, or ``timeout=``)
        └── ServerError         5xx   internal error or no worker available (502)

A 406 answers both "not enough credits" and a wrong content type; only the first is
:class:`InsufficientCredits` (the SDK always sends JSON, so the second means a proxy in between
rewrote the request: :class:`InvalidRequest`). 410 (model retired) is a :class:`NotFound`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIError",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "GenerationFailed",
    "GenerationTimeout",
    "InsufficientCredits",
    "InvalidRequest",
    "KinemaClientError",
    "NotFound",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "WebhookVerificationError",
    "error_for",
]


class KinemaClientError(Exception):
    """Base of every error the SDK raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectionFailed(KinemaClientError):
    """The server could not be reached, or the connection broke, on every attempt."""


class WebhookVerificationError(KinemaClientError):
    """A webhook delivery is not signed by the expected secret, or is too old or too new."""


class APIError(KinemaClientError):
    """The server answered with an error status.

    ``status`` is the HTTP status (``None`` when the SDK decided locally), ``body`` the decoded
    JSON body when there was one, ``request_id`` the request it is about when known.
    """

    status_code: int | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status if status is not None else self.status_code
        self.body = body
        self.request_id = request_id


class InvalidRequest(APIError):
    """400: a parameter or the body breaks a rule; the message names the field."""

    status_code = 400


class Unauthorized(APIError):
    """401: missing, unknown or revoked key."""

    status_code = 401


class Forbidden(APIError):
    """403: the key is not permitted to use the model."""

    status_code = 403


class NotFound(APIError):
    """404 (or 410): unknown or retired model, unknown or expired request id."""

    status_code = 404


class InsufficientCredits(APIError):
    """406: the key's balance cannot cover the price."""

    status_code = 406


class Conflict(APIError):
    """409: an Idempotency-Key reused with a different body."""

    status_code = 409


class GenerationFailed(APIError):
    """422: the generation was accepted, ran and failed; its price was refunded."""

    status_code = 422


class RateLimited(APIError):
    """429: over the key's rate limit; ``retry_after`` is the server's Retry-After (seconds)."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class GenerationTimeout(APIError):
    """504, or a ``timeout=`` that ran out: the job was cancelled (and refunded)."""

    status_code = 504


class ServerError(APIError):
    """500, 502, 503: an internal error, or no worker could run the job."""

    status_code = 500


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: NotFound,
    413: InvalidRequest,
    422: GenerationFailed,
    504: GenerationTimeout,
}


def error_for(
    status: int,
    message: str,
    *,
    body: Any = None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """The error for an answer with ``status`` and the body's ``error`` message."""
    kwargs: dict[str, Any] = {"status": status, "body": body, "request_id": request_id}
    if status == 429:
        return RateLimited(message, retry_after=retry_after, **kwargs)
    if status == 406:
        credits = "credit" in message.lower()
        return (InsufficientCredits if credits else InvalidRequest)(message, **kwargs)
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else APIError
    return cls(message, **kwargs)
