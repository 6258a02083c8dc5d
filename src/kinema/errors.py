"""Kinema's one error hierarchy. Each error knows its HTTP status; one handler renders
``{"error": message}``. Library exceptions are translated at the adapter with ``raise ... from``.

    KinemaError (500)
    ├── InvalidRequest (400)          bad parameter, body or input media
    │   └── InvalidInput (400)        an input image/audio that cannot be fetched or decoded
    ├── Unauthorized (401)            missing, unknown or revoked key
    ├── Forbidden (403)               key not permitted for the model
    ├── NotFound (404)                model, endpoint, request or file not found
    ├── MethodNotAllowed (405)
    ├── NotAcceptable (406)           wrong content type
    ├── InsufficientCredits (406)     balance cannot cover the price
    ├── Conflict (409)                idempotency key reused with another body
    ├── Gone (410)                    model retired by the operator
    ├── PayloadTooLarge (413)         request body over server.max_body_mb
    ├── GenerationFailed (422)        the generation ran and failed (async answers)
    ├── RateLimited (429)             carries retry_after seconds
    ├── BackendUnavailable (502)      no worker / runner could take the job
    ├── StorageUnavailable (503)      the storage (S3) is unreachable or refuses the service
    ├── GenerationTimeout (504)       the sync wait ran out
    └── ClientGone (499)              a sync client disconnected (nobody reads the answer)
"""

from __future__ import annotations


class KinemaError(Exception):
    status_code: int = 500
    default_message = "internal error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        self.headers: dict[str, str] = {}
        """Extra response headers (rate-limit state, generation headers of a failed sync call)."""
        super().__init__(self.message)


class InvalidRequest(KinemaError):
    status_code = 400
    default_message = "invalid request"


class InvalidInput(InvalidRequest):
    default_message = "invalid input media"


class Unauthorized(KinemaError):
    status_code = 401
    default_message = "missing or invalid API key"


class Forbidden(KinemaError):
    status_code = 403
    default_message = "this API key is not permitted to use this model"


class NotFound(KinemaError):
    status_code = 404
    default_message = "not found"


class MethodNotAllowed(KinemaError):
    status_code = 405
    default_message = "method not allowed"


class NotAcceptable(KinemaError):
    status_code = 406
    default_message = "request body must be JSON (Content-Type: application/json)"


class InsufficientCredits(KinemaError):
    status_code = 406
    default_message = "not enough credits"


class Conflict(KinemaError):
    status_code = 409
    default_message = "conflict"


class PayloadTooLarge(KinemaError):
    status_code = 413
    default_message = "request body too large"


class Gone(KinemaError):
    status_code = 410
    default_message = "this model has been retired"


class GenerationFailed(KinemaError):
    status_code = 422
    default_message = "generation failed"


class RateLimited(KinemaError):
    status_code = 429
    default_message = "rate limit exceeded"

    def __init__(self, message: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BackendUnavailable(KinemaError):
    status_code = 502
    default_message = "generation backend unavailable"


class StorageUnavailable(KinemaError):
    """The storage cannot be reached, or refuses this server's credentials: nothing about the
    request is wrong, and the same request may succeed once the storage is back."""

    status_code = 503
    default_message = "the storage is unavailable"


class GenerationTimeout(KinemaError):
    status_code = 504
    default_message = "generation timed out"


class ClientGone(KinemaError):
    """The sync request's client disconnected before its generation finished: the job is
    cancelled and refunded (499, the status proxies log for it; no one receives it)."""

    status_code = 499
    default_message = "the client disconnected"
