"""Classifying Azure failures once, from status code and `error.code`, for every adapter."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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


class StorageRefused(Exception):
    """Table storage answered 403 or 404 for the responder's own state (a role assignment not yet in effect,
    a firewall rule, a table deleted): the work is kept for the durable retry, never recorded as a permanent
    error of the registry, which is not at fault."""

    def __init__(self, failure: AzureFailure):
        self.failure = failure
        super().__init__(f"the responder's state storage refused the request ({failure})")


def classify(exc: BaseException) -> AzureFailure:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        DecodeError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    from dlp.azure.budget import BudgetExhausted

    if isinstance(exc, BudgetExhausted):
        return AzureFailure(exc.status_code, "BudgetExhausted", str(exc), True)
    if isinstance(exc, StorageRefused):
        return AzureFailure(exc.failure.status, exc.failure.code, str(exc), True)
    if isinstance(exc, HttpResponseError) and 200 <= (exc.status_code or 0) < 300 and _operation_failed(exc):
        # a long-running operation that ended Failed/Canceled: azure-core raises it with the poll's 2xx status
        code, message = _operation_error(exc)
        return AzureFailure(exc.status_code, code, message, False)
    if isinstance(exc, (DecodeError, json.JSONDecodeError)) or (
            isinstance(exc, HttpResponseError) and 200 <= (exc.status_code or 0) < 300):
        # a 2xx whose body is cut off or not JSON (a proxy, a dropped connection): garbled, not a refusal
        return AzureFailure(getattr(exc, "status_code", None), "InvalidResponseBody",
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


def _operation_failed(exc: BaseException) -> bool:
    from azure.core.polling.base_polling import OperationFailed

    return isinstance(exc.__cause__, OperationFailed)


def _operation_error(exc: Any) -> tuple[str, str]:
    """The `error` of the operation-status body ARM returned with the Failed status, if readable."""
    try:
        body = exc.response.json()
        error = body.get("error") or body.get("properties", {}).get("error") or {}
        return str(error.get("code") or "OperationFailed"), _short(str(error.get("message") or "operation failed"))
    except Exception:
        return "OperationFailed", "the long-running operation failed"
