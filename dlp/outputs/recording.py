"""Recording evaluations: one structured application-log line each, and their rows in Log Analytics.

Why an outbox: a Log Analytics outage must not erase the record of a remediation (Event Grid's
redelivery would find the registry compliant and the drift would vanish from the record). So:

* rows are uploaded evaluation by evaluation, packed into <= 1 MiB batches (the SDK's chunk
  size, by its own measure), so the rows of one evaluation always travel in one request;
* rows the service did not take are written to the outbox (`dlp.outputs.outbox`, kind "findings")
  before the invocation completes; if even that fails, `record` raises so the trigger retries;
* the outbox is re-sent at the start of the next upload (a few items) and by the timer
  function (`drain_outbox`), and each item is removed once sent;
* rows the service refuses for good (a 4xx other than 408/429 and the configuration errors
  401/403/404, see dlp.azure.logs) are logged with the service's message and moved to the kind
  "findings-rejected": kept for inspection, never retried;
* delivery is at least once, so the queries de-duplicate on EvaluationId + RuleId.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dlp.azure.budget import Budget, remaining
from dlp.domain.model import Evaluation
from dlp.outputs import findings
from dlp.outputs.outbox import Item, Outbox, OutboxError

log = logging.getLogger("dlp.evaluation")
notice = logging.getLogger("dlp.recording")

FINDINGS = "findings"               # outbox kind: rows waiting to be (re)sent
REJECTED = "findings-rejected"      # rows the service refused for good: kept for inspection, never re-sent
MAX_BATCH_BYTES = 1024 * 1024       # azure-monitor-ingestion's chunk size (json.dumps of each row, summed)
MAX_PIECE_BYTES = 256 * 1024        # rows per outbox item: compressed, far below the entity limit
BACKLOG_PER_RECORD = 10             # outbox items re-sent at the start of an upload; the timer sends the rest
OUTBOX_RESERVE_S = 3.0              # kept back from the upload's budget to write the outbox afterwards
MIN_UPLOAD_S = 1.0                  # with less than this left, an upload is not started: the rows are kept
DRAIN_BUDGET_S = 120.0              # the timer function's time for one drain
DRAIN_ITEMS = 50                    # outbox items per round of a drain
DRAIN_MAX_ITEMS = 2000              # items per drain at most (then the next tick goes on)

Row = dict[str, Any]
T = TypeVar("T")


class RecordingError(RuntimeError):
    """Rows could be neither sent nor kept: the invocation must fail so its trigger delivers it again."""


def log_line(evaluation: Evaluation) -> None:
    """One structured line per evaluation (Application Insights `traces`). No claims, no secrets."""
    log.log(logging.DEBUG if evaluation.out_of_scope else logging.INFO,
            "evaluation registry=%s compliant=%s action=%s reason=%s trigger=%s correlation=%s duration_ms=%.0f",
             evaluation.registry_id, evaluation.compliant, evaluation.outcome.action, evaluation.outcome.reason or "-",
             evaluation.context.trigger, evaluation.context.correlation_id or "-", evaluation.duration_ms,
             extra={"dlp": {"evaluationId": evaluation.evaluation_id, "registryId": evaluation.registry_id,
                            "compliant": evaluation.compliant, "action": evaluation.outcome.action,
                            "trigger": evaluation.context.trigger,
                            "eventIds": [c.event_id for c in (evaluation.context, *evaluation.answered)
                                         if c.event_id]}})


class LogRecorder:
    """Application log only (no Log Analytics configured)."""

    def record(self, evaluations: Sequence[Evaluation]) -> None:
        for evaluation in evaluations:
            log_line(evaluation)

    def record_rows(self, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
        log.info("evaluation %s re-recorded: %d row(s)", key, len(rows))


@dataclass
class Delivery:
    """What one upload (or drain) did, in rows."""

    sent: int = 0
    kept: int = 0            # written to the outbox (new rows) or left there (outbox rows), for a later try
    rejected: int = 0        # refused for good, set aside under REJECTED
    errors: list[str] = field(default_factory=list)

    def add(self, other: Delivery) -> None:
        self.sent += other.sent
        self.kept += other.kept
        self.rejected += other.rejected
        self.errors.extend(other.errors)


@dataclass
class _Unit:
    """The rows of one evaluation; `item` is set when they come from the outbox."""

    key: str
    rows: list[Row]
    item: Item | None = None
    retry: list[Row] = field(default_factory=list)
    retry_reason: str = ""
    rejected: list[Row] = field(default_factory=list)
    rejected_reason: str = ""

    @property
    def size(self) -> int:
        return sum(row_size(row) for row in self.rows)


def row_size(row: Mapping[str, Any]) -> int:
    """The SDK's own measure of a row when it cuts chunks."""
    return len(json.dumps(row).encode("utf-8"))


def _row_key(row: Mapping[str, Any]) -> tuple[str, str]:
    return str(row.get("EvaluationId", "")), str(row.get("RuleId", ""))


class LogsRecorder:
    """Log Analytics through the Logs Ingestion API, with the outbox behind it (None: no storage)."""

    def __init__(self, ingestion: Any, outbox: Outbox | None):
        self.ingestion = ingestion
        self.outbox = outbox

    # the Recorder protocol ----------------------------------------------------------------------
    def record(self, evaluations: Sequence[Evaluation]) -> None:
        """Log, then upload the outbox's oldest rows and these; keep what failed. Raises RecordingError only
        when rows of these evaluations could be neither sent nor kept."""
        for evaluation in evaluations:
            log_line(evaluation)
        units = [_Unit(e.evaluation_id, findings.rows(e)) for e in evaluations if not e.out_of_scope]
        if units:           # out of scope only: no row, not even a look at the backlog
            self._deliver(self._backlog(BACKLOG_PER_RECORD) + units)

    def record_rows(self, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rows already built: a recorded evaluation's rows again, updated (a later pull look, with the same
        EvaluationId and a later TimeGenerated, so the queries' de-duplication keeps the newest). Sent and kept
        like `record`'s; raises RecordingError when they could be neither sent nor kept."""
        if rows:
            self._deliver([*self._backlog(BACKLOG_PER_RECORD), _Unit(key, [dict(r) for r in rows])])

    # the timer function -------------------------------------------------------------------------
    def drain(self, *, budget_s: float = DRAIN_BUDGET_S, max_items: int = DRAIN_MAX_ITEMS) -> Delivery:
        """Re-send the outbox, oldest first, until it is empty, the service fails again, or time runs out."""
        total = Delivery()
        if self.outbox is None:
            return total
        done = 0
        left = remaining()                              # inside a sweep: never past its deadline
        with Budget.of(budget_s if left is None else min(budget_s, left)).active() as budget:
            while done < max_items and budget.remaining() > OUTBOX_RESERVE_S + MIN_UPLOAD_S:
                units = self._backlog(min(DRAIN_ITEMS, max_items - done), strict=True)
                if not units:
                    break
                delivery = self._deliver(units)
                total.add(delivery)
                done += len(units)
                if delivery.kept:       # still failing: leave the rest for the next tick
                    break
        if total.sent or total.kept or total.rejected:
            notice.info("outbox drain: %d row(s) sent, %d kept for later, %d rejected", total.sent, total.kept,
                        total.rejected)
        return total

    # delivery -----------------------------------------------------------------------------------
    def _backlog(self, limit: int, *, strict: bool = False) -> list[_Unit]:
        """Outbox items as units. A failure to read is only a warning here: new rows can still go out."""
        if self.outbox is None or limit <= 0:
            return []
        try:
            items = self.outbox.pending(FINDINGS, limit)
        except OutboxError as exc:
            if strict:
                raise
            notice.warning("outbox not readable, its rows wait for the next try: %s", exc)
            return []
        units = []
        for item in items:
            if isinstance(item.payload, list) and item.payload and all(isinstance(r, dict) for r in item.payload):
                units.append(_Unit(item.key, item.payload, item))
                continue
            notice.error("outbox item %s under %r is not a list of finding rows; set aside as %r", item.key, FINDINGS,
                         REJECTED)
            try:
                self.outbox.move(item, REJECTED, "not a list of finding rows")
            except OutboxError as exc:
                notice.warning("could not set the item aside: %s", exc)
        return units

    def _deliver(self, units: list[_Unit]) -> Delivery:
        """Upload every batch (a failed chunk does not stop the others, as with the SDK's own `on_error`),
        leaving OUTBOX_RESERVE_S of the budget to keep what failed."""
        left = remaining()
        upload_deadline = None if left is None else time.monotonic() + left - OUTBOX_RESERVE_S
        for batch in _batches(units):
            if upload_deadline is not None and upload_deadline - time.monotonic() < MIN_UPLOAD_S:
                for unit in batch:
                    unit.retry, unit.retry_reason = list(unit.rows), "not sent: no time left in this invocation"
                continue
            with _deadline(upload_deadline):
                self._send(batch, upload_deadline)
        with _deadline(None if left is None else time.monotonic() + max(remaining() or 0.0, OUTBOX_RESERVE_S)):
            return self._settle(units)

    def _send(self, batch: list[_Unit], deadline: float | None) -> None:
        """Upload one batch; record per unit which rows failed and why. A batch with rows refused for good is
        re-tried evaluation by evaluation, so one bad evaluation does not take the others with it."""
        failures = self.ingestion.upload([row for unit in batch for row in unit.rows])
        failed_by_key = {_row_key(row): chunk for chunk in failures for row in chunk.rows}
        suspects: list[_Unit] = []
        for unit in batch:
            for row in unit.rows:
                chunk = failed_by_key.get(_row_key(row))
                if chunk is None:
                    continue
                if chunk.rejected and len(batch) > 1:
                    if unit not in suspects:
                        suspects.append(unit)
                elif chunk.rejected:
                    unit.rejected.append(row)
                    unit.rejected_reason = str(chunk.failure)
                else:
                    unit.retry.append(row)
                    unit.retry_reason = str(chunk.failure)
        for unit in suspects:
            unit.retry, unit.rejected = [], []          # the unit is sent again whole: that answer is the one kept
            if deadline is not None and deadline - time.monotonic() < MIN_UPLOAD_S:
                unit.retry, unit.retry_reason = list(unit.rows), "not sent: no time left to isolate a refused chunk"
                continue
            self._send([unit], deadline)

    def _settle(self, units: list[_Unit]) -> Delivery:
        """Keep what failed. New rows first: failing to keep them raises; outbox bookkeeping only warns."""
        delivery = Delivery()
        for unit in units:
            for rows, reason in ((unit.rejected, unit.rejected_reason), (unit.retry, unit.retry_reason)):
                if rows:
                    delivery.errors.append(reason)
            delivery.sent += len(unit.rows) - len(unit.retry) - len(unit.rejected)
            delivery.kept += len(unit.retry)
            delivery.rejected += len(unit.rejected)
            if unit.rejected:
                notice.error("Log Analytics refused %d row(s) of evaluation %s for good: %s; set aside in the outbox "
                             "as %r, not retried", len(unit.rejected), unit.key, unit.rejected_reason, REJECTED)
        for unit in (u for u in units if u.item is None):
            if unit.retry:
                self._keep(FINDINGS, unit, unit.retry, unit.retry_reason)
            if unit.rejected:
                self._keep(REJECTED, unit, unit.rejected, unit.rejected_reason)
        if any(u.item is None and u.retry for u in units):
            notice.warning("Log Analytics did not take %d row(s) (%s); kept in the outbox for the next upload",
                           sum(len(u.retry) for u in units if u.item is None),
                           next(u.retry_reason for u in units if u.item is None and u.retry))
        for unit in (u for u in units if u.item is not None):
            try:
                self._settle_item(unit)
            except (OutboxError, RecordingError) as exc:     # the item is still there: at worst sent twice
                notice.warning("outbox bookkeeping failed (its rows may be sent twice): %s", exc)
        return delivery

    def _settle_item(self, unit: _Unit) -> None:
        assert self.outbox is not None and unit.item is not None
        if len(unit.retry) == len(unit.rows) and unit.rows:
            self.outbox.retry_later(unit.item, unit.retry_reason)
            return
        if unit.rejected:
            self._keep(REJECTED, unit, unit.rejected, unit.rejected_reason)
        if unit.retry:
            self._keep(FINDINGS, unit, unit.retry, unit.retry_reason)
        self.outbox.remove(unit.item)

    def _keep(self, kind: str, unit: _Unit, rows: list[Row], reason: str) -> None:
        if self.outbox is None:
            raise RecordingError(f"{len(rows)} finding row(s) of evaluation {unit.key} were not delivered ({reason}) "
                                 "and no storage is configured for the outbox")
        try:
            for piece in _pieces(rows):
                self.outbox.put(kind, unit.key, piece, error=reason)
        except OutboxError as exc:
            raise RecordingError(f"{len(rows)} finding row(s) of evaluation {unit.key} were neither delivered "
                                 f"({reason}) nor kept: {exc}") from exc


def _packed(items: Sequence[T], size_of: Callable[[T], int], limit: int) -> Iterator[list[T]]:
    """Consecutive items in groups whose summed size stays within `limit` (an item larger than the limit
    goes alone)."""
    group: list[T] = []
    size = 0
    for item in items:
        item_size = size_of(item)
        if group and size + item_size > limit:
            yield group
            group, size = [], 0
        group.append(item)
        size += item_size
    if group:
        yield group


def _batches(units: list[_Unit]) -> Iterator[list[_Unit]]:
    """Whole evaluations per batch, each batch within one SDK chunk (a single oversized evaluation goes alone
    and the SDK cuts it)."""
    return _packed([u for u in units if u.rows], lambda unit: unit.size, MAX_BATCH_BYTES)


def _pieces(rows: list[Row]) -> Iterator[list[Row]]:
    return _packed(rows, row_size, MAX_PIECE_BYTES)


@contextmanager
def _deadline(deadline: float | None) -> Iterator[None]:
    """Run the block under this monotonic deadline (None: leave the current budget as it is)."""
    if deadline is None:
        yield
        return
    with Budget(deadline).active():
        yield


def build_recorder(settings: Any, credential: Any, table_service: Any = None) -> LogRecorder | LogsRecorder:
    """Called once per process by the composition root (dlp.runtime)."""
    if not settings.logs_enabled:
        notice.warning("Log Analytics is not configured (DLP_LOGS_ENDPOINT, DLP_LOGS_RULE_ID): findings go to the "
                       "application log only")
        return LogRecorder()
    from dlp.azure.logs import LogsIngestion

    # Without storage (table_service None) there is no outbox: dlp.runtime says so once, for every adapter.
    outbox = Outbox(table_service) if table_service is not None else None
    ingestion = LogsIngestion(settings.logs_endpoint, credential, settings.logs_rule_id, settings.logs_stream)
    return LogsRecorder(ingestion, outbox)


def drain_outbox(recorder: Any) -> Delivery | None:
    """The timer function's work: re-send the findings the outbox keeps (None: Log Analytics not configured)."""
    drain = getattr(recorder, "drain", None)
    if drain is None:
        notice.debug("outbox drain skipped: Log Analytics is not configured")
        return None
    return drain()


__all__ = ["FINDINGS", "REJECTED", "Delivery", "LogRecorder", "LogsRecorder", "RecordingError", "build_recorder",
           "drain_outbox", "log_line"]
