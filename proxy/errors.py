"""The one exception tree of the proxy, rendered in one place as OpenAI's error envelope.

    ProxyError                         500 server_error
    ├── RequestError                   (the client's fault)
    │   ├── InvalidRequest             400 invalid_request_error   param = field path
    │   ├── Unauthorized               401 authentication_error
    │   ├── Forbidden                  403 permission_error
    │   ├── NotFound                   404 invalid_request_error
    │   │   └── UnknownModel           404 invalid_request_error   code = model_not_found
    │   ├── ModelRetired               410 invalid_request_error   code = model_retired
    │   ├── RequestTimeout             408 invalid_request_error   (client too slow)
    │   ├── PayloadTooLarge            413 invalid_request_error
    │   ├── UnsupportedMediaType       415 invalid_request_error
    │   ├── IdempotencyKeyInUse        409 invalid_request_error   (retry after it)
    │   │   └── IdempotencyAnswerLost  409 invalid_request_error   (not retryable)
    │   ├── IdempotencyKeyReused       422 invalid_request_error   (another body)
    │   └── RateLimited                429 rate_limit_error        (the proxy's own limits)
    │       └── BudgetExceeded         429 rate_limit_error        (not retryable)
    ├── ProviderNotConfigured          503 server_error            (no key for a provider)
    ├── Overloaded                     503 server_error            (backpressure)
    ├── StorageUnavailable             503 server_error            (object store down)
    ├── InsufficientStorage            507 server_error            (upload store full)
    └── UpstreamError                  (provider = "<name>")
        ├── UpstreamRejected           4xx as sent by the provider (not 401/403/429)
        ├── UpstreamAuthError          502 our credentials were refused (401/403)
        ├── UpstreamRateLimited        429 passes Retry-After through
        ├── UpstreamUnavailable        502 connect errors, provider 5xx
        │   └── CircuitOpen            503 the provider's circuit breaker is open
        ├── UpstreamTimeout            504
        ├── UpstreamProtocolError      502 unparseable or oversized provider response
        └── AllProvidersFailed         502 (429/504 when every cause was one) fallbacks

Each class carries, once, its HTTP ``status``, OpenAI error ``type`` and ``metric_label``
(the ``reason`` of ``imagegate_rejected_requests_total`` or the ``kind`` of
``imagegate_upstream_errors_total``; a subclass without its own inherits its parent's);
``retryable`` says whether a client may usefully try again (``x-should-retry``).
"""

from __future__ import annotations

import re
from typing import ClassVar


def _printable(text: str) -> str:
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ProxyError(Exception):
    # The answer's status: a class default, set per instance where the provider's
    # status passes through (UpstreamRejected) or the causes decide (AllProvidersFailed).
    status: int = 500
    error_type: ClassVar[str] = "server_error"
    retryable: ClassVar[bool] = True
    metric_label: ClassVar[str] = "other"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        # Messages and params quote client text (a header, a field name): text that
        # is not Unicode (a lone surrogate from undecodable header bytes) is escaped
        # here so the envelope and the log line can always be encoded.
        message = _printable(message)
        super().__init__(message)
        self.message = message
        self.param = None if param is None else _printable(param)
        self.code = code
        self.headers: dict[str, str] = headers or {}

    @property
    def log_code(self) -> str:
        """The access log's ``error``: ``code``, else the class name in snake_case."""
        if self.code:
            return self.code
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()


class RequestError(ProxyError):
    metric_label = "invalid_request"
    status = 400
    error_type = "invalid_request_error"
    retryable = False


class InvalidRequest(RequestError):
    pass


class Unauthorized(RequestError):
    metric_label = "unauthorized"
    status = 401
    error_type = "authentication_error"


class Forbidden(RequestError):
    metric_label = "forbidden"
    status = 403
    error_type = "permission_error"


class NotFound(RequestError):
    metric_label = "not_found"
    status = 404


class UnknownModel(NotFound):
    metric_label = "unknown_model"

    def __init__(self, message: str, *, param: str | None = "model") -> None:
        super().__init__(message, param=param, code="model_not_found")


class ModelRetired(RequestError):
    """The model was shut down by its provider (the catalogue's ``shutdown`` date)."""

    metric_label = "model_retired"
    status = 410
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message, param="model", code="model_retired")


class PayloadTooLarge(RequestError):
    metric_label = "too_large"
    status = 413


class UnsupportedMediaType(RequestError):
    metric_label = "unsupported_media_type"
    status = 415


class IdempotencyKeyInUse(RequestError):
    """The ``Idempotency-Key``'s first request is still running (``proxy.idempotency``)."""

    metric_label = "idempotency_conflict"
    status = 409
    retryable = True


class IdempotencyAnswerLost(IdempotencyKeyInUse):
    """The key's request ran, but its answer was not kept: it is not run again."""

    retryable = False


class IdempotencyKeyReused(RequestError):
    """The ``Idempotency-Key`` was used with another request body."""

    metric_label = "idempotency_mismatch"
    status = 422


class RequestTimeout(RequestError):
    status = 408


class RateLimited(RequestError):
    metric_label = "rate_limited"
    status = 429
    error_type = "rate_limit_error"
    retryable = True


class BudgetExceeded(RateLimited):
    metric_label = "budget"
    # A budget resets hours away: an SDK's quick retries would only be refused again.
    retryable = False


class ProviderNotConfigured(ProxyError):
    metric_label = "provider_not_configured"
    status = 503
    retryable = False


class Overloaded(ProxyError):
    metric_label = "overloaded"
    status = 503


class StorageUnavailable(ProxyError):
    """The upload store's object store did not answer (or refused the gateway):
    retryable, with Retry-After; edits with inline images do not need it."""

    metric_label = "storage_unavailable"
    status = 503

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(
            message,
            param=param,
            code="storage_unavailable",
            headers={"Retry-After": "5"},
        )


class UpstreamError(ProxyError):
    status = 502
    # True when nothing reached the provider (the connection was never made), so the
    # request cannot have been billed and may be sent again.
    unsent: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code, headers=headers)
        self.provider = provider


class UpstreamRejected(UpstreamError):
    """The provider said the client's input is bad; its status and message pass through."""

    metric_label = "rejected"
    status = 400
    error_type = "invalid_request_error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        upstream_status: int = 400,
        error_type: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, param=param, code=code)
        self.status = upstream_status
        self.upstream_type = error_type


class UpstreamAuthError(UpstreamError):
    metric_label = "auth"
    retryable = False


class UpstreamRateLimited(UpstreamError):
    metric_label = "rate_limited"
    status = 429
    error_type = "rate_limit_error"


class UpstreamUnavailable(UpstreamError):
    metric_label = "unavailable"


class CircuitOpen(UpstreamUnavailable):
    status = 503


class UpstreamTimeout(UpstreamError):
    metric_label = "timeout"
    status = 504


class UpstreamProtocolError(UpstreamError):
    metric_label = "protocol"


class AllProvidersFailed(UpstreamError):
    """Every provider of a model's fallback chain failed; the message lists each cause."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(
            message, provider=provider, code="all_providers_failed", headers=headers
        )
        self.status = status


# 408 from a provider means it gave up waiting on us: a timeout, not the client's input.
_TIMEOUT_STATUSES = frozenset({408, 504})


def from_upstream_status(
    provider: str,
    status: int,
    *,
    message: str | None,
    retry_after: str | None = None,
    error_type: str | None = None,
    param: str | None = None,
    code: str | None = None,
) -> UpstreamError:
    """Classify a non-success provider status. The only status ladder in the proxy.

    The provider's message is kept only where it is about the client's request (4xx);
    for refused credentials the client learns only that, never what the provider said.
    """
    if status in (401, 403):
        return UpstreamAuthError(
            f"provider '{provider}' refused the gateway's credentials "
            f"(HTTP {status}); the gateway operator must fix its configuration",
            provider=provider,
            code="upstream_auth_error",
        )
    if status == 429:
        headers = {"Retry-After": retry_after} if retry_after else {}
        return UpstreamRateLimited(
            message or f"provider '{provider}' is rate limiting requests",
            provider=provider,
            code=code or "rate_limit_exceeded",
            headers=headers,
        )
    if status in _TIMEOUT_STATUSES:
        return UpstreamTimeout(
            f"provider '{provider}' timed out (HTTP {status})",
            provider=provider,
            code="upstream_timeout",
        )
    if 400 <= status < 500:
        return UpstreamRejected(
            message or f"provider '{provider}' rejected the request (HTTP {status})",
            provider=provider,
            upstream_status=status,
            error_type=error_type,
            param=param,
            code=code,
        )
    return UpstreamUnavailable(
        f"provider '{provider}' failed (HTTP {status})",
        provider=provider,
        code="upstream_error",
    )


class InsufficientStorage(ProxyError):
    """The upload store is full (507); retrying the same upload will not help soon."""

    status = 507
    retryable = False
