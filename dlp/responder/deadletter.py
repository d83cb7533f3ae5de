"""Replay of the events Event Grid dead-lettered: the drift they announced is handled within minutes, not at
the next sweep.

Event Grid dead-letters an event it could not deliver (the function app down or refusing, a slot swap,
retries exhausted) into a blob container (`DLP_DEADLETTER_CONTAINER`: a container of the app's own storage, or
a container URL on an account of its own, which is what infra/ deploys: Event Grid can reach it as a trusted
service while the app's storage stays private).
Each blob is a JSON array of events in the subscription's schema, each with Event Grid's dead-letter fields
(`deadLetterReason`, `deliveryAttempts`, `lastDeliveryOutcome`, `lastHttpStatusCode`, `publishTime`),
named `<EVENT-SUBSCRIPTION-NAME>/<yyyy>/<m>/<d>/<h>/<guid>.json` (upper-cased subscription name, date and
hour not zero-padded; a topic folder may come first).

The replay timer (function_app.py, every 5 minutes) lists blobs outside `processed/` and `malformed/`,
parses each with the Event Grid SDK (dlp.inputs.event_files) and runs every relevant event through the pipeline
like a live event: a fresh read decides, so a stale or planted event can never cause a wrong write. Only
when every event of a blob was handled (evaluated and recorded, or handed to the durable retry) is the blob
moved to `processed/<name>` (copy, then delete): a crash before that replays the whole blob again, which
the pipeline and the alert state make harmless (at least once, de-duplicated by state). A blob that is not
a document of events is moved to `malformed/<name>` so that it is looked at once, not every 5 minutes.

The functions host runs a timer function on one instance at a time (its schedule lock is a blob lease),
so two replays of the same container do not overlap; `python -m dlp replay --dead-letter` may run beside
it, and the worst that does is handle an event twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from dlp.azure.budget import Budget
from dlp.domain.model import Evaluation, Target, registry_key
from dlp.inputs.event_files import DocumentEvent, EventDocumentError, load_document

log = logging.getLogger("dlp.deadletter")

TRIGGER = "dead-letter"
PROCESSED_PREFIX = "processed/"
MALFORMED_PREFIX = "malformed/"
SETTLED_PREFIXES = (PROCESSED_PREFIX, MALFORMED_PREFIX)
REPLAY_BUDGET_S = 240.0          # host.json functionTimeout is 5 minutes; then the next run goes on
MIN_EVENT_BUDGET_S = 5.0         # do not start an event with less than this left: leave the blob for the next run
MAX_BLOBS_PER_RUN = 100
LIST_LIMIT = 5000                # blob names listed per run (health counts up to this many)


@dataclass(frozen=True)
class PendingBlob:
    """A dead-letter blob not yet replayed."""

    name: str
    last_modified: datetime | None
    size: int


@dataclass(frozen=True)
class BlobReplay:
    """What one blob led to."""

    name: str
    events: int = 0
    handled: int = 0                   # relevant events run through the pipeline (or handed to the durable retry)
    ignored: int = 0                   # events that are not registry writes or deletes, and duplicates
    malformed: int = 0
    evaluations: tuple[Evaluation, ...] = ()
    reasons: tuple[str, ...] = ()      # dead-letter reasons, once each
    settled: str = ""                  # "processed", "malformed", or "" when the blob stays for the next run
    problem: str = ""
    stuck: bool = False                # could not be read, recorded or moved: tried again next run


@dataclass(frozen=True)
class ReplayReport:
    blobs: tuple[BlobReplay, ...] = ()
    left: int = 0                      # pending blobs not reached in this run

    @property
    def events(self) -> int:
        return sum(b.events for b in self.blobs)

    @property
    def stuck(self) -> tuple[BlobReplay, ...]:
        return tuple(b for b in self.blobs if b.stuck)

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r for b in self.blobs for r in b.reasons))


@dataclass(frozen=True)
class Backlog:
    """For /api/health: how many blobs wait, and how old the oldest is."""

    pending: int = 0
    oldest_age_s: int | None = None
    malformed: int = 0
    error: str = ""


class DeadLetterContainer:
    """The dead-letter container through azure-storage-blob (managed identity in Azure, Azurite in tests)."""

    def __init__(self, client: Any, clock: Any = None):
        self._client = client
        self._clock = clock or (lambda: datetime.now(timezone.utc))

    @classmethod
    def from_settings(cls, settings: Any, credential: Any) -> DeadLetterContainer | None:
        """None when replay is off (no container named, or no blob endpoint for the app's storage)."""
        if not settings.deadletter_enabled:
            return None
        from azure.storage.blob import ContainerClient, LinearRetry

        from dlp.azure.budget import storage_request_hook, storage_response_hook

        # Like the queue: a short linear retry instead of the SDK's 15 s + 18 s, each attempt cut to the budget
        options = {"retry_policy": LinearRetry(backoff=0.5, random_jitter_range=0.2, retry_total=2),
                   "connection_timeout": 5, "read_timeout": 20, "raw_request_hook": storage_request_hook,
                   "raw_response_hook": storage_response_hook}
        if settings.deadletter_account_url:      # a dead-letter account of its own (infra/): the managed identity
            client = ContainerClient(settings.deadletter_account_url, settings.deadletter_container,
                                     credential=credential, **options)
        elif settings.storage_connection_string:
            client = ContainerClient.from_connection_string(settings.storage_connection_string,
                                                            settings.deadletter_container, **options)
        else:
            client = ContainerClient(settings.storage_blob_uri, settings.deadletter_container, credential=credential,
                                     **options)
        return cls(client)

    @property
    def name(self) -> str:
        return self._client.container_name

    def _names(self, limit: int) -> list[Any]:
        """Blob items outside processed/ and malformed/, walking top-level folders so those two are not listed."""
        found: list[Any] = []
        for item in self._client.walk_blobs(delimiter="/"):
            if len(found) >= limit:
                break
            name = item.name
            if name in SETTLED_PREFIXES:
                continue
            if name.endswith("/"):         # a folder (BlobPrefix): everything below it
                for blob in self._client.list_blobs(name_starts_with=name):
                    found.append(blob)
                    if len(found) >= limit:
                        break
            else:
                found.append(item)
        return found

    def pending(self, limit: int = LIST_LIMIT) -> list[PendingBlob]:
        """Blobs to replay, oldest first."""
        blobs = [PendingBlob(b.name, b.last_modified, int(b.size or 0)) for b in self._names(limit)]
        epoch = datetime.min.replace(tzinfo=timezone.utc)
        return sorted(blobs, key=lambda b: (b.last_modified or epoch, b.name))

    def read(self, blob: PendingBlob) -> bytes:
        from dlp.inputs.event_files import MAX_DOCUMENT_BYTES

        if blob.size > MAX_DOCUMENT_BYTES:
            raise EventDocumentError(f"is larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB")
        return self._client.download_blob(blob.name).readall()

    def settle(self, blob: PendingBlob, content: bytes, prefix: str) -> None:
        """Move the blob under `prefix` (copy, then delete: a crash in between replays it once more)."""
        from azure.core.exceptions import ResourceNotFoundError

        self._client.upload_blob(prefix + blob.name, content, overwrite=True)
        try:
            self._client.delete_blob(blob.name)
        except ResourceNotFoundError:      # another replay (the CLI beside the timer) moved it first
            pass

    def backlog(self) -> Backlog:
        blobs = self.pending()
        now = self._clock()
        ages = [int((now - b.last_modified).total_seconds()) for b in blobs if b.last_modified is not None]
        malformed = sum(1 for _ in self._client.list_blobs(name_starts_with=MALFORMED_PREFIX))
        return Backlog(len(blobs), max(ages) if ages else None, malformed)


def replay_targets(events: Sequence[DocumentEvent], now: datetime) -> tuple[list[Target], int, int]:
    """The targets of a document's events, each with its dead-letter reason and delay: one per registry (the
    first event's), because a fresh read decides whatever the event, and a blob of thousands of events for a few
    registries must cost a few reads. Returns (targets, ignored and coalesced events, malformed). Pure."""
    targets: list[Target] = []
    seen: set[str] = set()
    ignored = malformed = 0
    for event in events:
        if event.intake.malformed:
            malformed += 1
            continue
        if event.intake.ignored:
            ignored += 1
            continue
        reason = event.dead_letter.reason if event.dead_letter else ""
        delay = int(max(0.0, (now - event.event_time).total_seconds())) if event.event_time else 0
        for target in event.intake.targets:
            key = registry_key(target.registry_id)
            if key in seen:
                ignored += 1
                continue
            seen.add(key)
            context = replace(target.context, dead_letter_reason=reason, replay_delay_s=delay)
            targets.append(replace(target, context=context))
    return targets, ignored, malformed


@dataclass
class Replayer:
    """Runs blobs through the pipeline. `enforce=None`: DLP_MODE at the moment of each write decides."""

    services: Any
    container: DeadLetterContainer
    enforce: bool | None = None
    record: bool = True
    settle: bool = True                # move handled blobs to processed/ (the CLI only looks: it leaves them)
    clock: Any = field(default=None)

    def now(self) -> datetime:
        return (self.clock or self.services.clock)()

    def run(self, *, budget_s: float = REPLAY_BUDGET_S, max_blobs: int = MAX_BLOBS_PER_RUN) -> ReplayReport:
        """Every pending blob, oldest first. A blob that cannot be read, recorded or moved (a lease or legal hold
        on it, storage refusing, recording down) is reported and left for the next run: it never stops the blobs
        behind it."""
        from dlp.azure.errors import classify

        deadline = time.monotonic() + budget_s
        pending = self.container.pending()
        done: list[BlobReplay] = []
        for index, blob in enumerate(pending[:max_blobs]):
            if deadline - time.monotonic() < MIN_EVENT_BUDGET_S:
                return ReplayReport(tuple(done), len(pending) - index)
            try:
                done.append(self.replay_blob(blob, deadline))
            except Exception as exc:
                problem = str(classify(exc))[:300]
                log.error("dead-letter blob %s could not be replayed (%s); it stays for the next run", blob.name,
                          problem)
                done.append(BlobReplay(blob.name, problem=problem, stuck=True))
        return ReplayReport(tuple(done), max(0, len(pending) - max_blobs))

    def replay_blob(self, blob: PendingBlob, deadline: float) -> BlobReplay:
        from dlp.responder import pipeline

        try:
            content = self.container.read(blob)
        except EventDocumentError as exc:
            return self._quarantine(blob, b"", f"the blob {exc}")
        try:
            events = load_document(content, trigger=TRIGGER)
        except EventDocumentError as exc:
            return self._quarantine(blob, content, f"the blob {exc}")
        targets, ignored, malformed = replay_targets(events, self.now())
        reasons = tuple(dict.fromkeys(e.dead_letter.reason for e in events if e.dead_letter and e.dead_letter.reason))
        evaluations: list[Evaluation] = []
        for target in targets:
            left = deadline - time.monotonic()
            if left < MIN_EVENT_BUDGET_S:
                if not self._hand_over(targets[len(evaluations):]):   # the blob stays, replayed whole next run
                    return BlobReplay(blob.name, len(events), len(evaluations), ignored, malformed,
                                      tuple(evaluations), reasons, "",
                                      "the run's time ran out; the blob is replayed again next run")
                break
            budget = Budget.of(min(self.services.settings.time_budget_s, left - 1.0))
            evaluations += pipeline.run([target], self.services, enforce=self.enforce, budget=budget,
                                        record=self.record)
        for event in events:
            if event.intake.malformed:
                log.warning("dead-letter blob %s: event %s is malformed: %s", blob.name, event.intake.event_id,
                            event.intake.malformed)
        settled = ""
        if self.settle:
            self.container.settle(blob, content, PROCESSED_PREFIX)
            settled = "processed"
        log.info("dead-letter blob %s replayed: %d events, %d handled, %d ignored, %d malformed (reasons: %s)",
                 blob.name, len(events), len(targets), ignored, malformed, ", ".join(reasons) or "none given")
        return BlobReplay(blob.name, len(events), len(targets), ignored, malformed, tuple(evaluations), reasons,
                          settled)

    def _hand_over(self, targets: Sequence[Target]) -> bool:
        """The rest of a blob the run has no time for, to the durable retry (which re-reads each registry in the
        mode then in force), so that the blob can be moved and a huge one never holds up the others. False when
        there is no durable retry, or this replay only looks (the CLI)."""
        from dlp.responder.pipeline import retry_message

        retry = self.services.retry
        if retry is None or not self.settle:
            return False
        enforce = self.services.settings.mode == "enforce" if self.enforce is None else self.enforce
        for target in targets:
            retry.hand_over(retry_message(target.registry_id, target.context, enforce=enforce, attempt=1,
                                          reason="dead-letter replay: the run's time ran out"), 1)
        log.warning("dead-letter replay: %d registries handed to the durable retry (the run's time ran out)",
                    len(targets))
        return True

    def _quarantine(self, blob: PendingBlob, content: bytes, problem: str) -> BlobReplay:
        log.error("dead-letter blob %s set aside under %s: %s", blob.name, MALFORMED_PREFIX, problem)
        settled = ""
        if self.settle:
            self.container.settle(blob, content, MALFORMED_PREFIX)
            settled = "malformed"
        return BlobReplay(blob.name, settled=settled, problem=problem)


def replay_pending(services: Any) -> ReplayReport | None:
    """The replay timer: replay every pending dead-letter blob of DLP_DEADLETTER_CONTAINER, then say so once on
    every alert channel (dlp/outputs/alerts/dead_letters.py). None: no container configured."""
    container = services.dead_letters
    if container is None:
        return None
    report = Replayer(services, container).run()
    if report.blobs or report.left:
        log.warning("dead letters replayed: %d blobs, %d events (reasons: %s); %d blobs left for the next run",
                    len(report.blobs), report.events, ", ".join(report.reasons) or "none given", report.left)
    if report.blobs:
        announce(services, report)
    return report


def announce(services: Any, report: ReplayReport) -> None:
    """The "events were dead-lettered" alert, once per batch of blobs. Never raises: the replay is done."""
    from dlp.outputs.alerts.dead_letters import KEY, REMIND_AFTER, SEND_BUDGET_S, dead_letter_alert, signature

    send = getattr(services.notifier, "announce", None)
    if send is None:
        return
    try:
        with Budget.of(SEND_BUDGET_S).active():
            send(KEY, signature(report), dead_letter_alert(report, mode=services.settings.mode,
                                                           at=services.clock().isoformat()),
                 remind_after=REMIND_AFTER)
    except Exception:
        log.exception("the dead-letter alert could not be sent")


__all__ = ["Backlog", "BlobReplay", "DeadLetterContainer", "PendingBlob", "ReplayReport", "Replayer", "replay_pending",
           "replay_targets"]
