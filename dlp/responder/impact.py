"""Exposure impact: what was pulled, by whom and from where, while a registry was open.

Every closed exposure window (a flip-and-restore found by the delayed check, a remediation, a window the sweep
finds) gets delayed looks at the registry's resource logs: registry logs reach Log Analytics minutes after the
pull, so the looks run LOOK_OFFSETS_S after the window closed (+5 and +20 minutes). `prepare`, called before
the record (dlp/responder/finish.py), does a look that is already due at once (the delayed check runs 7 minutes
after the event, so a flip-and-restore is recorded and alerted with its pulls), attaches what is known to the
evaluation (`Exposure.pulls`: counted, unknown with why, pending with when, off), keeps the window and the rows
being recorded in an impact row (dlp/azure/impacts.py) and puts the looks still to come on the durable retry
queue (message kind LOOK_KIND, handled by `run_look` from dlp/triggers/handlers.py).

A later look that finds a different picture re-records the same rows (same EvaluationId, later TimeGenerated:
the queries keep the newest row) and alerts only when the picture grew: more pulls, a new caller or IP
(dlp.domain.pulls.Picture). A failed query leaves the window recorded with pulls unknown and is retried on the
next look (a failed last look gets up to two more, RETRY_LOOK_S); the last failure is alerted once.

Idempotent like the exposure claims: a look claims the impact row (ETag) before it queries, records and alerts,
then marks itself done; a second delivery of the same look, or another instance racing it, finds it claimed (and
asks to run again BUSY_RETRY_S later) or done. A look that raises (its record could be neither sent nor kept)
releases its claim for the redelivery; a crash after the claim leaves it to anyone after CLAIM_TTL:
the record is written again (same EvaluationId + RuleId, de-duplicated by the queries) and the alert may go out
again with the same alert ID (email de-duplicates on it): at least once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from dlp.domain import pulls as counting
from dlp.domain.exposure import iso, parse_time
from dlp.domain.model import A_EXPOSURE, PULLS_COUNTED, Context, Evaluation, Exposure, Outcome, Pulls

log = logging.getLogger("dlp.impact")

LOOK_KIND = "exposure-look"
LOOK_OFFSETS_S = (300, 1200)       # after the window closed: resource logs arrive minutes late
RETRY_LOOK_S = (1800, 7200)        # after a failed last look: two more tries
MAX_INLINE = 5                     # looks done at once per call (a sweep may find many windows; the rest is queued)
INLINE_LOOK_S = 8.0                # the time one inline look may take
INLINE_RESERVE_S = 4.0             # never start one with less left (the record needs it)
LOOK_BUDGET_S = 45.0               # one queued look: a query, the record, the alert
CLAIM_TTL = timedelta(minutes=5)
BUSY_RETRY_S = 60.0                # a look claimed by another instance: try again this much later


def window_of(evaluation: Evaluation) -> tuple[datetime | None, datetime] | None:
    """(opened, closed) of the evaluation's closed exposure window; None when it has none."""
    found = evaluation.exposure
    if found is None or not found.closed_at:
        return None
    closed = parse_time(found.closed_at)
    return None if closed is None else (parse_time(found.opened_at), closed)


# --- before the record --------------------------------------------------------------------------------------

def prepare(evaluations: Sequence[Evaluation], services: Any) -> list[Evaluation]:
    """The evaluations with what is known of their windows' pulls; looks due now done, later ones queued.
    Never raises: whatever fails leaves the pulls unknown, with why."""
    out, inline = [], [0]
    for evaluation in evaluations:
        if window_of(evaluation) is None:
            out.append(evaluation)
            continue
        try:
            out.append(_prepare_one(evaluation, services, inline))
        except Exception as exc:
            log.exception("pull look-up of %s not prepared", evaluation.registry_id)
            out.append(_with_pulls(evaluation, counting.unknown(f"not looked up: {type(exc).__name__}")))
    return out


def _with_pulls(evaluation: Evaluation, pulls: Pulls) -> Evaluation:
    assert evaluation.exposure is not None
    return replace(evaluation, exposure=replace(evaluation.exposure, pulls=pulls))


def _prepare_one(evaluation: Evaluation, services: Any, inline: list[int]) -> Evaluation:
    opened, closed = window_of(evaluation) or (None, None)
    assert closed is not None
    if not services.settings.pulls_enabled or getattr(services, "registry_logs", None) is None:
        return _with_pulls(evaluation, counting.off())
    if opened is None:
        return _with_pulls(evaluation, counting.unknown("the window's start is unknown"))
    store = services.impacts
    existing = store.get(evaluation.registry_id, evaluation.evaluation_id)
    if existing is not None:          # recorded before (a redelivery): record what was recorded then
        return _with_pulls(evaluation, Pulls.from_json(existing.recorded))
    now = services.clock()
    due = [n for n, offset in enumerate(LOOK_OFFSETS_S, 1) if closed + timedelta(seconds=offset) <= now]
    later = [n for n in range(1, len(LOOK_OFFSETS_S) + 1) if n not in due]
    pulls, picture, done = counting.pending(closed + timedelta(seconds=LOOK_OFFSETS_S[0])), counting.Picture(), ()
    if due and inline[0] < MAX_INLINE and _time_for_inline():
        inline[0] += 1
        pulls, picture, failed = look(services, evaluation.registry_id, opened, closed, now)
        done = tuple(due)
        if failed and not later:
            later = [len(LOOK_OFFSETS_S) + 1]
    elif due:
        later = [due[-1], *later]         # due, but not now: queued to run at once
    evaluation = _with_pulls(evaluation, pulls)
    problem = _keep(evaluation, services, picture, done, later, now)
    if problem and pulls.status != PULLS_COUNTED:
        evaluation = _with_pulls(evaluation, counting.unknown(problem))
    return evaluation


def _time_for_inline() -> bool:
    from dlp.azure.budget import remaining

    left = remaining()
    return left is None or left > INLINE_LOOK_S + INLINE_RESERVE_S


def _keep(evaluation: Evaluation, services: Any, picture: counting.Picture, done: tuple[int, ...],
          later: list[int], now: datetime) -> str:
    """Keep the impact row and queue the later looks; the problem in words when they cannot be ("" when fine)."""
    from dlp.azure.impacts import Impact
    from dlp.outputs import findings

    assert evaluation.exposure is not None and evaluation.exposure.pulls is not None
    if not later:
        return ""
    if services.retry is None:
        return "no durable queue for the delayed looks (AzureWebJobsStorage is not configured)"
    payload = {"window": {"registryId": evaluation.registry_id, "evaluationId": evaluation.evaluation_id,
                          "mode": evaluation.mode, "exposure": evaluation.exposure.to_json(),
                          "caller": evaluation.context.caller[:256], "planned": len(LOOK_OFFSETS_S)},
               "rows": findings.rows(evaluation)}
    told = picture.to_json() if evaluation.exposure.pulls.status == PULLS_COUNTED else {}
    impact = Impact(evaluation.registry_id, evaluation.evaluation_id, payload, told,
                    evaluation.exposure.pulls.to_json(), done)
    try:
        services.impacts.create(impact)
    except Exception as exc:
        log.warning("impact row of %s not kept (%s): no later look", evaluation.registry_id, exc)
        return f"the delayed looks could not be kept ({type(exc).__name__})"
    closed = parse_time(evaluation.exposure.closed_at) or now
    queued = 0
    for n in later:
        offset = LOOK_OFFSETS_S[n - 1] if n <= len(LOOK_OFFSETS_S) else None
        when = closed + timedelta(seconds=offset) if offset is not None else now + timedelta(seconds=RETRY_LOOK_S[0])
        queued += _queue(services, evaluation.registry_id, evaluation.evaluation_id, n, when, now)
    return "" if queued else "the delayed looks could not be queued"


def _queue(services: Any, registry_id: str, evaluation_id: str, n: int, when: datetime, now: datetime) -> int:
    message = {"kind": LOOK_KIND, "lookId": str(uuid.uuid4()), "registryId": registry_id,
               "evaluationId": evaluation_id, "look": n}
    delay = getattr(services.retry, "look_delay_s", None)
    try:
        services.retry.schedule(message, max(0.0, (when - now).total_seconds()) if delay is None else delay)
        return 1
    except Exception as exc:
        log.warning("look %d of %s not queued (%s)", n, registry_id, exc)
        return 0


# --- the look ------------------------------------------------------------------------------------------------

def look(services: Any, registry_id: str, opened: datetime, closed: datetime, now: datetime
         ) -> tuple[Pulls, counting.Picture, bool]:
    """One query of the window's rows -> (pulls, picture, failed). Keeps the workspace's query status for health."""
    from dlp.azure.budget import Budget, remaining
    from dlp.azure.logs_query import QueryFailed

    left = remaining()
    try:
        with Budget.of(INLINE_LOOK_S if left is None else min(INLINE_LOOK_S, max(0.0, left - INLINE_RESERVE_S))).active():
            found = services.registry_logs.window_rows(registry_id, opened, closed, now=now)
    except QueryFailed as exc:
        _status(services, now, exc.reason)
        return counting.unknown(exc.reason), counting.Picture(), True
    except Exception as exc:            # anything else is a bug or the budget: never a zero
        _status(services, now, type(exc).__name__)
        return counting.unknown(f"the query failed ({type(exc).__name__})"), counting.Picture(), True
    _status(services, now, "")
    pulls, picture = counting.count(found.rows, opened, closed, truncated=found.truncated)
    return pulls, picture, False


def _status(services: Any, now: datetime, error: str) -> None:
    """The workspace's last query outcome, shared by every instance (GET /api/health)."""
    try:
        status = services.impacts.query_status()
        if error:
            status["lastError"] = {"at": now.isoformat(), "error": error[:300]}
        else:
            status["lastSuccess"] = now.isoformat()
        services.impacts.set_query_status(status)
    except Exception as exc:
        log.debug("query status not kept (%s)", exc)


def run_look(body: dict[str, Any], services: Any) -> list[Evaluation]:
    """The durable-retry handler of an exposure-look message. Raises only when the updated record could be neither
    sent nor kept (the queue delivers the message again; the claim is its own)."""
    from dlp.azure.budget import Budget

    with Budget.of(LOOK_BUDGET_S).active():
        return _run_look(body, services)


def _run_look(body: dict[str, Any], services: Any) -> list[Evaluation]:
    from dlp.ids import registry_of

    found = registry_of(body.get("registryId")) if isinstance(body.get("registryId"), str) else None
    owner, evaluation_id, n = body.get("lookId"), body.get("evaluationId"), body.get("look")
    if found is None or not isinstance(owner, str) or not isinstance(evaluation_id, str) or not isinstance(n, int):
        log.error("exposure-look message without a registry, look ID, evaluation ID or look number; dropped")
        return []
    if getattr(services, "registry_logs", None) is None or getattr(services, "impacts", None) is None:
        log.warning("exposure look of %s dropped: registry logs are no longer configured", found[0])
        return []
    owner = f"{owner[:64]}|{uuid.uuid4().hex[:12]}"     # this delivery: a duplicate delivery racing it is another
    impact = _claim(services, found[0], evaluation_id, owner, n)
    if impact is None:
        return []
    try:
        return _finish_look(services, impact, owner, n)
    except Exception:
        _release(services, found[0], evaluation_id, owner)      # its redelivery may take it at once
        raise


def _release(services: Any, registry_id: str, evaluation_id: str, owner: str) -> None:
    try:
        impact = services.impacts.get(registry_id, evaluation_id)
        if impact is not None and impact.owner == owner:
            services.impacts.replace(replace(impact, owner="", claimed_at=""))
    except Exception as exc:
        log.warning("claim on the look of %s not released (%s); it expires", registry_id, exc)


def _claim(services: Any, registry_id: str, evaluation_id: str, owner: str, n: int) -> Any:
    """The impact row, claimed for look `n` by `owner`; None when there is nothing to do (done, or busy)."""
    for _ in range(3):
        impact = services.impacts.get(registry_id, evaluation_id)
        if impact is None:
            log.error("exposure look %d of %s: no impact row %s; dropped", n, registry_id, evaluation_id)
            return None
        now = services.clock()
        busy = impact.owner and impact.owner != owner and not _stale(impact.claimed_at, now)
        if busy:
            _queue(services, registry_id, evaluation_id, n, now + timedelta(seconds=BUSY_RETRY_S), now)
            return None
        if n in impact.looks and impact.owner != owner:
            return None                        # done (a duplicate message, or a racing instance finished it)
        claimed = services.impacts.replace(replace(impact, owner=owner, claimed_at=now.isoformat()))
        if claimed is not None:
            return claimed
    return None


def _stale(claimed_at: str, now: datetime) -> bool:
    moment = parse_time(claimed_at)
    return moment is None or moment <= now - CLAIM_TTL


def _finish_look(services: Any, impact: Any, owner: str, n: int) -> list[Evaluation]:
    window = impact.payload.get("window") or {}
    exposure = Exposure.from_json(window.get("exposure") or {})
    opened, closed = parse_time(exposure.opened_at), parse_time(exposure.closed_at)
    now = services.clock()
    if opened is None or closed is None:
        services.impacts.replace(replace(impact, owner="", claimed_at="", looks=(*impact.looks, n)))
        return []
    pulls, picture, failed = look(services, impact.registry_id, opened, closed, now)
    recorded = Pulls.from_json(impact.recorded)
    told = counting.Picture.from_json(impact.told)
    planned = int(window.get("planned") or len(LOOK_OFFSETS_S))
    more = n < planned or (failed and n < planned + len(RETRY_LOOK_S))
    if failed and recorded.status == PULLS_COUNTED:
        pulls = recorded                     # a count in hand is not taken back by a later failure
    elif failed and more:
        pulls = counting.with_note(pulls, f"{pulls.note}; looked again later")
    news = picture.news(told) if not failed else ()
    tell_unknown = failed and not more and recorded.status != PULLS_COUNTED and not impact.told.get("unknown")
    if pulls.to_json() != recorded.to_json():
        _record(services, impact, exposure, pulls, now)
    evaluations = []
    if news or tell_unknown:
        reason = counting.REASON_FOUND if news else counting.REASON_UNKNOWN
        evaluation = _alert_evaluation(impact, window, exposure, pulls, reason)
        services.notifier.notify([evaluation])
        evaluations.append(evaluation)
    told_now = picture.merged(told).to_json() if not failed else dict(impact.told)
    if tell_unknown:
        told_now["unknown"] = True
    services.impacts.replace(replace(impact, owner="", claimed_at="", looks=tuple(sorted({*impact.looks, n})),
                                     told=told_now, recorded=pulls.to_json()))
    if failed and more and n >= planned:
        retry_at = now + timedelta(seconds=RETRY_LOOK_S[min(n - planned, len(RETRY_LOOK_S) - 1)])
        _queue(services, impact.registry_id, impact.evaluation_id, n + 1, retry_at, now)
    log.info("exposure look %d of %s: %s", n, impact.registry_id, pulls.sentence)
    return evaluations


def _record(services: Any, impact: Any, exposure: Exposure, pulls: Pulls, now: datetime) -> None:
    """The window's rows again, with the pull columns of this look and this look's time (the newest row wins)."""
    from dlp.outputs.findings import pull_columns

    columns = pull_columns(pulls)
    rows = [{**row, **columns, "TimeGenerated": now.isoformat()} for row in impact.payload.get("rows") or ()
            if isinstance(row, dict)]
    services.recorder.record_rows(impact.evaluation_id, rows)


def _alert_evaluation(impact: Any, window: dict[str, Any], exposure: Exposure, pulls: Pulls, reason: str
                      ) -> Evaluation:
    """What the look's alert is built from: the window again, with its pulls (an `exposure` evaluation, never
    recorded: the record is the re-recorded rows)."""
    context = Context(trigger="retry", caller=str(window.get("caller") or exposure.opened_by),
                      event_time=exposure.opened_at, event_id=impact.evaluation_id)
    outcome = Outcome(A_EXPOSURE, reason, exposure.sentence)
    return Evaluation(impact.evaluation_id, impact.registry_id, context, str(window.get("mode") or ""), outcome,
                      None, iso(None), 0.0, exposure=replace(exposure, pulls=pulls))


def health(services: Any) -> dict[str, Any] | None:
    """GET /api/health: the registry-logs workspace and its last query error (None when not configured)."""
    if not services.settings.pulls_enabled:
        return None
    body: dict[str, Any] = {"workspaceId": services.settings.registry_logs_workspace}
    try:
        status = services.impacts.query_status() if getattr(services, "impacts", None) is not None else {}
    except Exception as exc:
        status = {"statusUnreadable": type(exc).__name__}
    body.update({"lastError": status.get("lastError"), "lastSuccess": status.get("lastSuccess", "")})
    error_at = (status.get("lastError") or {}).get("at", "")
    body["failing"] = bool(error_at and error_at > str(status.get("lastSuccess") or ""))
    return body


__all__ = ["LOOK_KIND", "LOOK_OFFSETS_S", "health", "look", "prepare", "run_look", "window_of"]
