"""`POST /api/recheck` and `GET /api/health`: a func.HttpRequest in, a func.HttpResponse out.

Why a re-check endpoint: operators want to ask "is this registry, or this whole subscription,
locked right now?" without waiting for a write to raise an event. The answer comes from the
same pipeline as the events and is recorded like them (`Trigger = http`).

Input is untrusted even behind a function key, so everything is checked before any Azure call:
the body is size-bounded JSON with exactly one of `registryId` (a registry ID, strict pattern)
or `scope` (a subscription or resource-group ID); the target must lie inside DLP_SCOPES (403
otherwise, with zero ARM calls). Every answer is JSON; errors are `{"error": {"code", "message"}}`
and never carry a traceback.

A function key is a shared secret that can trigger enforcement (`?remediate=true` in enforce
mode), so docs/security.md shows how to put Entra ID sign-in (App Service Authentication) in front of
it; the signed-in caller then arrives in `X-MS-CLIENT-PRINCIPAL-*` and is recorded as who
requested the re-check (never as who changed the registry). Without App Service Authentication
(`WEBSITE_AUTH_ENABLED` is not `True`) those headers are whatever the caller sent: recorded,
marked unverified, never trusted.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import azure.functions as func

from dlp import __version__
from dlp.azure.budget import Budget
from dlp.domain import remediation
from dlp.domain.model import A_DEFERRED, A_ERROR, A_GONE, Context, Evaluation, Target
from dlp.ids import registry_of
from dlp.inputs.claims import MAX_ID, Caller, caller_from_claims
from dlp.responder import pipeline
from dlp.responder.finish import finish
from dlp.responder.services import Services
from dlp.sanitize import clean
from dlp.settings import MODES, OUTPUT_OF, SCOPE_RE, ConfigError, Settings, load

log = logging.getLogger("dlp.http")

MAX_BODY_BYTES = 4096          # {"registryId": <about 250 characters>} fits many times over
MAX_ID_LENGTH = 400            # longest valid registry ID: ~51 + 90 + 48 + 50 characters
MAX_CALLER_LENGTH = 256
FIELDS = ("registryId", "scope")
PRINCIPAL_NAME = "X-MS-CLIENT-PRINCIPAL-NAME"
PRINCIPAL_ID = "X-MS-CLIENT-PRINCIPAL-ID"
PRINCIPAL = "X-MS-CLIENT-PRINCIPAL"
MAX_PRINCIPAL_BYTES = 16 * 1024


class ApiError(Exception):
    """An answer other than 200: status, stable machine-readable code, a sentence for people."""

    def __init__(self, status: int, code: str, message: str, evaluations: Sequence[Evaluation] = ()):
        self.status = status
        self.code = code
        self.message = message
        self.evaluations = tuple(evaluations)
        super().__init__(message)


def _json(status: int, body: Mapping[str, Any]) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, indent=None, separators=(",", ":")), status_code=status,
                             mimetype="application/json", charset="utf-8",
                             headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


def _quote(value: str, limit: int = 120) -> str:
    """A user-supplied value safe to echo in a message (repr, shortened)."""
    return repr(value[:limit] + ("..." if len(value) > limit else ""))


# --- intake (pure) ---------------------------------------------------------------------------------

def parse_remediate(params: Mapping[str, str]) -> bool:
    value = params.get("remediate")
    if value is None or value.strip().lower() in ("", "false"):
        return False
    if value.strip().lower() == "true":
        return True
    raise ApiError(400, "InvalidParameter", f"remediate must be true or false, not {_quote(value, 20)}")


def parse_body(body: bytes) -> tuple[str, str]:
    """The request body -> ("registryId" | "scope", the ID). ApiError(400) for anything else."""
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(400, "BodyTooLarge", f"the body must be at most {MAX_BODY_BYTES} bytes of JSON")
    try:
        document = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "InvalidJson", 'the body must be a JSON object: {"registryId": "<registry ID>"} '
                                           'or {"scope": "/subscriptions/<id>[/resourceGroups/<name>]"}') from None
    if not isinstance(document, dict):
        raise ApiError(400, "InvalidJson", 'the body must be a JSON object with "registryId" or "scope"')
    unknown = [key for key in document if key not in FIELDS]
    if unknown:
        raise ApiError(400, "UnknownField", f"unknown field {_quote(str(unknown[0]), 40)}; "
                                            'send exactly one of "registryId" or "scope"')
    present = [key for key in FIELDS if key in document]
    if len(present) != 1:
        raise ApiError(400, "InvalidBody", 'send exactly one of "registryId" or "scope"')
    kind = present[0]
    value = document[kind]
    if not isinstance(value, str):
        raise ApiError(400, "InvalidRegistryId" if kind == "registryId" else "InvalidScope", f"{kind} must be a string")
    if kind == "registryId":
        return kind, _registry_id(value)
    return kind, _scope(value)


def _registry_id(value: str) -> str:
    found = registry_of(value) if len(value) <= MAX_ID_LENGTH else None
    if found is None or not found[1] or found[0] != value:
        raise ApiError(400, "InvalidRegistryId",
                       f"registryId {_quote(value)} is not a container registry ID: expected "
                       "/subscriptions/<guid>/resourceGroups/<name>/providers/Microsoft.ContainerRegistry/registries/<name>")
    return value


def _scope(value: str) -> str:
    if len(value) > MAX_ID_LENGTH or not SCOPE_RE.fullmatch(value):
        hint = "; send a registry ID as registryId" if registry_of(value[:MAX_ID_LENGTH]) else ""
        raise ApiError(400, "InvalidScope", f"scope {_quote(value)} is not a subscription or resource-group ID: "
                                            f"expected /subscriptions/<guid>[/resourceGroups/<name>]{hint}")
    return value


def _header(headers: Mapping[str, str], name: str, limit: int = MAX_CALLER_LENGTH) -> str:
    value = headers.get(name) or headers.get(name.lower()) or ""
    return clean(str(value), limit)


def app_service_auth(environ: Mapping[str, str] | None = None) -> bool:
    """App Service Authentication is on: the platform sets WEBSITE_AUTH_ENABLED=True, and only then does its
    front end strip X-MS-CLIENT-PRINCIPAL-* from requests and set them itself."""
    environ = os.environ if environ is None else environ
    return str(environ.get("WEBSITE_AUTH_ENABLED", "")).strip().lower() == "true"


def _principal_claims(headers: Mapping[str, str]) -> Mapping[str, Any]:
    """The claims in X-MS-CLIENT-PRINCIPAL (base64 JSON {"claims": [{"typ", "val"}, ...]}); {} when unusable."""
    raw = headers.get(PRINCIPAL) or headers.get(PRINCIPAL.lower()) or ""
    if not raw or len(raw) > MAX_PRINCIPAL_BYTES:
        return {}
    try:
        document = json.loads(base64.b64decode(raw, validate=False))
    except (ValueError, RecursionError):
        return {}
    listed = document.get("claims") if isinstance(document, dict) else None
    if not isinstance(listed, list):
        return {}
    return {c["typ"]: c["val"] for c in listed if isinstance(c, dict) and isinstance(c.get("typ"), str)
            and isinstance(c.get("val"), str)}


def platform_ip(headers: Mapping[str, str]) -> str:
    """The caller's IP as the App Service front end saw it, never as the caller wrote it.

    The front end sets `client-ip` (`ip:port`) and overwrites any value the client sent; it appends the address it
    saw to `X-Forwarded-For`, whose earlier entries are the client's own text. So: `client-ip`, else the *last*
    `X-Forwarded-For` entry (a Functions host running locally has no front end: there both are the client's).
    The port is dropped; anything that is not an address is "" (docs/security.md)."""
    value = _header(headers, "client-ip") or _header(headers, "X-Forwarded-For").split(",")[-1]
    return _address(value.strip())


def _address(value: str) -> str:
    """"203.0.113.7:50123" -> "203.0.113.7", "[2001:db8::1]:443" -> "2001:db8::1"; "" for anything else."""
    import ipaddress

    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]{2,45})\](?::\d{1,5})?", value)
    candidates = [bracketed.group(1)] if bracketed else [value, value.rsplit(":", 1)[0] if value.count(":") == 1 else value]
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return ""


def context_of(headers: Mapping[str, str], *, verified: bool | None = None) -> Context:
    """The record's context: trigger http, who asked for the re-check, a fresh id.

    The requester is never "Changed by" (they did not make the drift). Their headers are trusted only when App
    Service Authentication is on; otherwise anyone can send them, so the name is kept but marked unverified."""
    verified = app_service_auth() if verified is None else verified
    principal = caller_from_claims(_principal_claims(headers)) if verified else Caller()
    name = _header(headers, PRINCIPAL_NAME) or principal.name
    object_id = _header(headers, PRINCIPAL_ID, MAX_ID) or principal.object_id
    if not name and object_id:
        name = f"object:{object_id}"
    ip = platform_ip(headers)
    request_id = str(uuid.uuid4())
    return Context(trigger="http", event_id=request_id, event_type="recheck", operation_name="POST /api/recheck",
                   correlation_id=request_id, caller=name, caller_ip=ip, caller_name=principal.display_name,
                   caller_object_id=object_id, caller_app_id=principal.app_id, caller_tenant_id=principal.tenant_id,
                   caller_verified=verified and bool(name))


def check_scope(kind: str, target: str, settings: Settings) -> None:
    """403 unless the target lies inside DLP_SCOPES (empty: every scope). Before any Azure call.
    The target is a validated ID, so the message may quote it whole."""
    if remediation.in_scopes(target, settings.scopes):
        return
    what = "registry" if kind == "registryId" else "scope"
    lookalike = remediation.scope_lookalike(target, settings.scopes)
    if lookalike:
        log.warning("re-check of a look-alike of a scope refused: %s", lookalike)
    raise ApiError(403, "OutOfScope", f"{what} {target} is outside DLP_SCOPES; "
                                      "the responder only re-checks what it is configured to act on"
                                      + (f" ({lookalike})" if lookalike else ""))


# --- the re-check ------------------------------------------------------------------------------------

def _explain(evaluations: list[Evaluation], settings: Settings, remediate: bool) -> list[Evaluation]:
    """In enforce mode without ?remediate=true the plan is only reported: say so, not "set DLP_MODE"."""
    if remediate or settings.mode != "enforce":
        return evaluations
    return [replace(e, outcome=replace(e.outcome, detail="re-checked without remediate=true: this is the plan; "
                                                         "POST again with ?remediate=true to apply it"))
            if e.outcome.reason == remediation.R_AUDIT else e for e in evaluations]


def _arm_failures(evaluations: Sequence[Evaluation]) -> list[Evaluation]:
    return [e for e in evaluations if e.outcome.action in (A_ERROR, A_DEFERRED)]


def _run(kind: str, target: str, context: Context, services: Services, enforce: bool) -> list[Evaluation]:
    from dlp.azure.errors import classify
    from dlp.responder import sweep

    budget = Budget.of(services.settings.time_budget_s)
    if kind == "registryId":
        try:
            return pipeline.run([Target(target, context)], services, enforce=enforce, budget=budget, record=False)
        except Exception as exc:        # the pipeline raises only when the durable retry could not take the work
            log.exception("re-check of %s: the work could not be handed to the durable retry", target)
            raise ApiError(503, "RetryUnavailable", f"ARM failed and the durable retry could not take the work: "
                                                    f"{classify(exc)}") from None

    try:
        return sweep.assess(sweep.Listing.of_scopes([target]), services, context=context, budget=budget,
                            enforce=enforce).evaluations
    except Exception as exc:
        failure = classify(exc)
        log.warning("re-check of %s: Resource Graph failed: %s", target, failure)
        raise ApiError(502, failure.code or "ResourceGraphFailed",
                       f"Resource Graph could not list the registries: {failure}") from None


def _status(kind: str, evaluations: list[Evaluation]) -> ApiError | None:
    if kind == "registryId" and evaluations and evaluations[0].outcome.action == A_GONE:
        return ApiError(404, "RegistryNotFound", f"registry {evaluations[0].registry_id} does not exist",
                        evaluations)
    failed = _arm_failures(evaluations)
    if failed:
        first = failed[0].outcome
        return ApiError(502, first.error_code or first.reason or "ArmFailed",
                        f"ARM failed for {len(failed)} of {len(evaluations)} registr"
                        f"{'y' if len(evaluations) == 1 else 'ies'}: {first.detail}"[:1000], evaluations)
    return None


def handle_recheck(method: str, params: Mapping[str, str], headers: Mapping[str, str],
                   body: bytes) -> tuple[int, dict[str, Any]]:
    """The re-check as (status, JSON body). Validation, scope and settings come before any Azure call."""
    from dlp import runtime

    try:
        if method.upper() != "POST":
            raise ApiError(405, "MethodNotAllowed", "use POST")
        remediate = parse_remediate(params)
        kind, target = parse_body(body)
        try:
            services = runtime.services()
        except ConfigError as exc:
            raise ApiError(503, "ConfigurationError", f"the responder is misconfigured: {exc}") from None
        check_scope(kind, target, services.settings)
        context = context_of(headers)
        enforce = remediate and services.settings.mode == "enforce"
        evaluations = _explain(_run(kind, target, context, services, enforce), services.settings, remediate)
        try:
            finish(evaluations, services)
        except Exception:
            log.exception("re-check %s: the evaluations could not be recorded", context.event_id)
            raise ApiError(503, "RecordingFailed", "the re-check ran but could not be recorded; try again later",
                           evaluations) from None
        problem = _status(kind, evaluations)
        if problem is not None:
            raise problem
        return 200, {"evaluations": [e.to_json() for e in evaluations]}
    except ApiError as error:
        if error.status >= 500 or error.status == 403:
            log.warning("re-check answered %d %s: %s", error.status, error.code, error.message)
        body_json: dict[str, Any] = {"error": {"code": error.code, "message": error.message}}
        if error.evaluations:
            body_json["evaluations"] = [e.to_json() for e in error.evaluations]
        return error.status, body_json


def recheck(req: func.HttpRequest) -> func.HttpResponse:
    """HTTP trigger glue for POST /api/recheck. Never raises: a bug of ours is a JSON 500 and a log line."""
    try:
        status, body = handle_recheck(req.method or "", req.params, req.headers, req.get_body() or b"")
    except Exception:
        log.exception("re-check failed unexpectedly")
        status, body = 500, {"error": {"code": "InternalError",
                                       "message": "the re-check failed unexpectedly; the error is in the function log"}}
    return _json(status, body)


# --- health --------------------------------------------------------------------------------------------

def health_report(environ: Mapping[str, str] | None = None, services: Any = None) -> tuple[int, dict[str, Any]]:
    """Version, mode, which outputs are configured (never their values), and any configuration error; with the
    process's `services`, also the delivery backlog (dlp.responder.delivery): poison messages, alerts given up on,
    findings set aside, remediations whose record is still pending.

    200 "ok"; 200 "degraded" with `problems` when an optional-output setting is unusable (that output is off,
    enforcement runs); 503 "misconfigured" when a setting that decides what is enforced is bad.

    A configuration error is reported (503) instead of crashing the host at import, so the
    function app keeps serving this endpoint while someone fixes the settings.
    """
    environ = os.environ if environ is None else environ
    try:
        settings = load(environ)
    except ConfigError as exc:
        raw_mode = str(environ.get("DLP_MODE", "audit") or "audit").strip().lower()
        return 503, {"status": "misconfigured", "version": __version__,
                     "mode": raw_mode if raw_mode in MODES else None, "outputs": None,
                     "problems": _degraded(exc.degraded),
                     "configurationError": {"message": str(exc),
                                            "problems": [{"setting": name, "problem": why} for name, why in exc.problems]}}
    # A bad optional-output setting turned that output off: enforcement runs, so 200, but say what is off
    problems = _degraded(settings.degraded)
    body: dict[str, Any] = {"status": "degraded" if problems else "ok", "version": __version__,
                            "mode": settings.mode, "outputs": settings.outputs(), "scopes": len(settings.scopes),
                            "problems": problems, "configurationError": None}
    if settings.deadletter_enabled:
        backlog = body["deadLetters"] = dead_letter_backlog()
        if backlog.get("pending") or backlog.get("malformed") or backlog.get("error"):
            body["status"] = "degraded"
    if services is not None:
        from dlp.responder.delivery import backlog as delivery_backlog

        body["backlog"] = delivery_backlog(services).to_json()
        registry_logs = registry_logs_health(services)
        if registry_logs is not None:
            body["registryLogs"] = registry_logs
            if registry_logs.get("failing"):
                body["status"] = "degraded"
    return 200, body


def registry_logs_health(services: Any) -> dict[str, Any] | None:
    """The registry-logs workspace and its last query error (pulls of exposure windows), bounded in time."""
    from dlp.responder.impact import health as impact_health

    with Budget.of(HEALTH_STORAGE_BUDGET_S).active():
        return impact_health(services)


def _degraded(degraded: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"setting": name, "problem": why, "turnedOff": OUTPUT_OF.get(name, name)} for name, why in degraded]


HEALTH_STORAGE_BUDGET_S = 5.0


def dead_letter_backlog() -> dict[str, Any]:
    """Dead-lettered events waiting for the replay timer: they mean Event Grid could not reach the responder."""
    from dlp import runtime
    from dlp.azure.errors import classify

    try:
        with Budget.of(HEALTH_STORAGE_BUDGET_S).active():
            container = runtime.services().dead_letters
            backlog = container.backlog()
    except Exception as exc:
        return {"error": str(classify(exc))[:300]}
    return {"container": container.name, "pending": backlog.pending, "oldestAgeSeconds": backlog.oldest_age_s,
            "malformed": backlog.malformed}


def health(req: func.HttpRequest) -> func.HttpResponse:
    """HTTP trigger glue for GET /api/health."""
    try:
        from dlp import runtime

        services = runtime.services() if runtime.configuration_error() is None else None
        status, body = health_report(services=services)
    except Exception:
        log.exception("health failed unexpectedly")
        status, body = 500, {"status": "error", "version": __version__,
                             "error": {"code": "InternalError", "message": "see the function log"}}
    return _json(status, body)


__all__ = ["ApiError", "context_of", "handle_recheck", "health", "health_report", "parse_body", "recheck"]
