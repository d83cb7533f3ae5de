"""Classifying Azure failures once, from status code and `error.code`, for every adapter."""

from __future__ import annotations

from dataclasses import dataclass

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class AzureFailure:
    """What went wrong, without secrets: status, ARM error code, message."""

    status: int | None
    code: str
    message: str
    transient: bool

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status else ""
        return f"{where}{self.code}: {self.message}".strip()


def classify(exc: BaseException) -> AzureFailure:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        DecodeError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    from dlp.budget import BudgetExhausted

    if isinstance(exc, BudgetExhausted):
        return AzureFailure(exc.status_code, "BudgetExhausted", str(exc), True)
    if isinstance(exc, DecodeError) or (isinstance(exc, HttpResponseError) and 200 <= (exc.status_code or 0) < 300):
        # a 2xx whose body is cut off or not JSON (a proxy, a dropped connection): garbled, not a refusal
        return AzureFailure(exc.status_code, "InvalidResponseBody",
                            "the service's answer could not be read: " + _short(str(exc), 200), True)
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        error = getattr(exc, "error", None)
        code = getattr(error, "code", None) or (exc.reason or "HttpError")
        message = getattr(error, "message", None) or exc.message or ""
        status = int(exc.status_code)
        if status == 401:
            return AzureFailure(status, code, _short(message), True)   # token trouble: the retry gets a new one
        return AzureFailure(status, code, _short(message), status in TRANSIENT_STATUS)
    if isinstance(exc, ClientAuthenticationError):
        return AzureFailure(None, "CredentialUnavailable", _short(str(exc)), True)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return AzureFailure(None, type(exc).__name__, _short(str(exc)), True)
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return AzureFailure(None, type(exc).__name__, _short(str(exc)), True)
    return AzureFailure(None, type(exc).__name__, _short(str(exc)), False)


def _short(text: str, limit: int = 500) -> str:
    """First line only: SDK messages append the whole response, which can be long."""
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return first[:limit]
