"""Exposure windows: for how long, and by whose hand, a registry held a non-compliant DLP value.

Why windows and not states: the responder re-reads the live registry, so an attacker who enables
exports, copies images out and disables exports again before the event is handled leaves a registry
that reads compliant. Azure keeps property-level change history for every resource (Resource Graph's
`resourcechanges` table, 14 days); this module turns a registry's change rows into the intervals in
which each DLP property held its non-compliant value, with who opened and who closed each one.

Pure: no clock, no I/O, no settings. The rows are raw Resource Graph rows (dicts); every field read
from them is hostile text and goes through `display_text` before anyone sees it.

Row shape (learn.microsoft.com/azure/governance/resource-graph/changes/get-resource-changes):
`properties.targetResourceId`, `properties.changeType` (Create / Update / Delete),
`properties.changeAttributes` {timestamp, changedBy, changedByType, clientType, operation,
correlationId, ...} and `properties.changes`, keyed by property path ("properties.publicNetworkAccess")
with {previousValue, newValue, propertyChangeType (Insert / Update / Remove), changeCategory}.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from dlp.domain.model import Exposure, registry_key
from dlp.sanitize import clean


@dataclass(frozen=True)
class Watched:
    """One DLP property as the change history names it, and the value that exposes the registry."""

    path: str            # ARM path in the REST body (as dlp.domain.model.ARM_PATHS), e.g. "publicNetworkAccess"
    exposed: str         # the non-compliant value, lower-case ("enabled", "allow", "true")
    default: str         # Azure's default when the property is absent (a "Remove" change)
    opened: str          # "exports enabled": what the opening write did, for sentences
    closed: str          # "disabled"
    rule_id: str         # the rule the window belongs to (RuleId of its Log Analytics row)

    @property
    def change_key(self) -> str:
        """The key of `properties.changes` (Resource Graph prefixes the body's `properties.`)."""
        return "properties." + self.path


WATCHED: tuple[Watched, ...] = (
    Watched("policies.exportPolicy.status", "enabled", "enabled", "exports enabled", "disabled",
            "DLP.ACR.ExportPolicy"),
    Watched("publicNetworkAccess", "enabled", "enabled", "public network access enabled", "disabled",
            "DLP.ACR.PublicNetworkAccess"),
    Watched("networkRuleSet.defaultAction", "allow", "allow", "firewall default action set to Allow",
            "set to Deny", "DLP.ACR.Firewall"),
    Watched("anonymousPullEnabled", "true", "false", "anonymous pull enabled", "disabled", "DLP.ACR.AnonymousPull"),
    Watched("adminUserEnabled", "true", "false", "admin user enabled", "disabled", "DLP.ACR.AdminUser"),
)
BY_CHANGE_KEY = {w.change_key.lower(): w for w in WATCHED}
BY_PATH = {w.path.lower(): w for w in WATCHED}

# Who closed a window
CLOSED_BY_RESPONDER = "responder"
CLOSED_BY_PERSON = "person"        # anyone else: a user, a pipeline, another app
CLOSED_BY_DELETION = "deleted"     # the registry was deleted while open
STILL_OPEN = "open"

MAX_DISPLAY = 128

def display_text(value: Any, limit: int = MAX_DISPLAY) -> str:
    """Hostile text (a display name, a UPN, a client type) made safe to show in one line: NFKC-normalised (a
    fullwidth name reads as what it claims to be), then `dlp.sanitize.clean` (control, format and
    direction-changing characters), cut to `limit`."""
    if value is None:
        return ""
    text = clean(unicodedata.normalize("NFKC", str(value)))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 timestamp (Resource Graph writes `2024-04-09T13:26:17.347+00:00`; `Z` and 7-digit
    fractions also occur) as an aware UTC datetime; None when it is not one."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    match = re.match(r"^(.*T\d{2}:\d{2}:\d{2})(\.\d+)?(.*)$", text)
    if match:                       # Python takes at most 6 fraction digits
        fraction = (match.group(2) or "")[:7]
        text = match.group(1) + (fraction.ljust(7, "0") if fraction else "") + match.group(3)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def iso(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if moment is not None else ""


@dataclass(frozen=True)
class PropertyChange:
    path: str                    # lower-case change key, e.g. "properties.publicnetworkaccess"
    previous: str | None         # lower-case text; None when absent (an Insert)
    new: str | None              # None when absent (a Remove)


@dataclass(frozen=True)
class ChangeRecord:
    """One row of `resourcechanges`, reduced to what windows need."""

    registry_id: str
    at: datetime
    change_type: str             # create / update / delete (lower-case)
    changed_by: str              # as given (hostile: display only through display_text)
    client_type: str
    operation: str
    correlation_id: str
    change_id: str
    changes: tuple[PropertyChange, ...] = ()
    previous_snapshot: str = ""
    new_snapshot: str = ""


def _value(entry: Mapping[str, Any], name: str) -> str | None:
    """A `previousValue` / `newValue` as lower-case text; None when absent. Resource Graph writes booleans as the
    strings "True" / "False" (a JSON boolean is read the same), and an Insert's previous value / a Remove's new
    value as JSON null; one documented example shows the string "null": both mean absent."""
    if name not in entry or entry[name] is None:
        return None
    value = entry[name]
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip().strip('"').lower()
    return None if text == "null" else text


NO_CORRELATION = "00000000-0000-0000-0000-000000000000"
AZURE_ACTOR = "Azure"     # how a platform change (`changedBy` "System") is shown


def _actor(attributes: Mapping[str, Any]) -> str:
    """Who `changedBy` names, as text to show: "" (unknown) for "Unspecified" (creates and deletes carry it, and so
    do some updates), "Azure" for a platform change ("System", with changedByType System or an all-zero
    correlation ID); anything else as given (hostile: shown only through display_text)."""
    value = attributes.get("changedBy")
    who = str(value)[:512] if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if who.strip().lower() in ("", "unspecified"):
        return ""
    if who.strip().lower() == "system" and (str(attributes.get("changedByType") or "").lower() == "system"
                                            or str(attributes.get("correlationId") or "") == NO_CORRELATION):
        return AZURE_ACTOR
    return who


def parse_row(row: Any) -> ChangeRecord | None:
    """A raw Resource Graph row -> ChangeRecord; None for a row that is not a usable change (never raises)."""
    if not isinstance(row, Mapping):
        return None
    props = row.get("properties")
    if not isinstance(props, Mapping):
        return None
    attributes = props.get("changeAttributes") if isinstance(props.get("changeAttributes"), Mapping) else {}
    target = props.get("targetResourceId")
    at = parse_time(attributes.get("timestamp"))
    if not isinstance(target, str) or not target or at is None:
        return None
    changes = []
    raw_changes = props.get("changes") if isinstance(props.get("changes"), Mapping) else {}
    for path, entry in raw_changes.items():
        if isinstance(path, str) and path.lower() in BY_CHANGE_KEY and isinstance(entry, Mapping):
            changes.append(PropertyChange(path.lower(), _value(entry, "previousValue"), _value(entry, "newValue")))

    def text(name: str, limit: int = 512) -> str:
        value = attributes.get(name)
        return str(value)[:limit] if isinstance(value, (str, int)) and not isinstance(value, bool) else ""

    return ChangeRecord(
        registry_id=target.rstrip("/"), at=at, change_type=str(props.get("changeType") or "").lower(),
        changed_by=_actor(attributes), client_type=text("clientType"), operation=text("operation"),
        correlation_id=text("correlationId", 128), change_id=str(row.get("id") or row.get("name") or "")[:1024],
        changes=tuple(sorted(changes, key=lambda c: c.path)), previous_snapshot=text("previousResourceSnapshotId"),
        new_snapshot=text("newResourceSnapshotId"))


@dataclass(frozen=True)
class Window:
    """An interval in which one DLP property of one registry held its non-compliant value."""

    registry_id: str
    property: str                        # ARM path, e.g. "policies.exportPolicy.status"
    value: str                           # the non-compliant value it held (lower-case)
    opened_at: datetime | None           # None: already open when the history we were given starts
    opened_by: str
    closed_at: datetime | None           # None: still open
    closed_by: str
    closer: str                          # CLOSED_BY_RESPONDER / CLOSED_BY_PERSON / CLOSED_BY_DELETION / STILL_OPEN
    opened_correlation: str = ""
    closed_correlation: str = ""
    opened_client: str = ""
    closed_client: str = ""

    @property
    def watched(self) -> Watched:
        return BY_PATH[self.property.lower()]

    @property
    def closed(self) -> bool:
        return self.closer != STILL_OPEN

    @property
    def key(self) -> str:
        """Stable identity of the window, the same whichever query saw it (the event path's delayed check or
        the sweep): a closed window by its closing change, an open one by its opening change."""
        if self.closed:
            anchor = f"closed|{iso(self.closed_at)}|{self.closed_correlation}"
        else:
            anchor = f"open|{iso(self.opened_at)}|{self.opened_correlation}"
        raw = f"{registry_key(self.registry_id)}|{self.property.lower()}|{anchor}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]

    def seconds(self, until: datetime | None = None) -> float | None:
        """Seconds open: closed - opened; for a window still open, until `until`; None when a bound is unknown."""
        end = self.closed_at or until
        if self.opened_at is None or end is None:
            return None
        return max(0.0, round((end - self.opened_at).total_seconds(), 3))

    def sentence(self, until: datetime | None = None) -> str:
        """"Registry was open for N s: exports enabled by X at T1, disabled by Y at T2" (hostile text made safe)."""
        w = self.watched
        seconds = self.seconds(until)
        span = f"for {seconds:g} s" if seconds is not None else "for an unknown time"
        opened_when = iso(self.opened_at) if self.opened_at else "an unknown time before the history starts"
        opened = f"{w.opened} by {display_text(self.opened_by) or 'unknown'} at {opened_when}"
        if self.closer == STILL_OPEN:
            closed = "still open" + (f" at {iso(until)}" if until else "")
        elif self.closer == CLOSED_BY_DELETION:
            closed = f"registry deleted by {display_text(self.closed_by) or 'unknown'} at {iso(self.closed_at)}"
        else:
            who = "the responder" if self.closer == CLOSED_BY_RESPONDER else (display_text(self.closed_by) or "unknown")
            closed = f"{w.closed} by {who} at {iso(self.closed_at)}"
        verb = "is" if self.closer == STILL_OPEN else "was"
        return f"Registry {verb} open {span}: {opened}, {closed}"

    def to_json(self, until: datetime | None = None) -> dict[str, Any]:
        return {"registryId": self.registry_id, "property": self.property, "value": self.value,
                "openedAt": iso(self.opened_at), "openedBy": display_text(self.opened_by),
                "closedAt": iso(self.closed_at), "closedBy": display_text(self.closed_by), "closer": self.closer,
                "seconds": self.seconds(until), "key": self.key}


Closes = Callable[[ChangeRecord, PropertyChange], bool]


def _nobody(_record: ChangeRecord, _change: PropertyChange) -> bool:
    return False


def histories(rows: Iterable[Any]) -> dict[str, list[ChangeRecord]]:
    """Change rows (any registries, any order) -> each registry's change records, oldest first. Rows that are not
    changes, or name no DLP property, are skipped; duplicate rows (the same change seen twice) count once."""
    records: dict[tuple[str, str, str], ChangeRecord] = {}
    for row in rows:
        record = parse_row(row)
        if record is not None:
            records.setdefault((registry_key(record.registry_id), record.change_id, iso(record.at)), record)
    by_registry: dict[str, list[ChangeRecord]] = {}
    for (key, _, _), record in records.items():
        by_registry.setdefault(key, []).append(record)
    return {key: _ordered(found) for key, found in by_registry.items()}


def windows(rows: Iterable[Any], *, closes: Closes = _nobody) -> dict[str, tuple[Window, ...]]:
    """Change rows (any registries, any order) -> exposure windows per registry key, oldest first.

    A property is exposed from a change that gives it its non-compliant value until a change that takes it
    away (or the registry's deletion). A first change that takes it away with no opening change in `rows`
    gives a window whose `opened_at` is None (open before the history we were given). Whether a closing change
    was the responder's write is not decided here: `closes` answers it (dlp.domain.provenance.responder_closes).
    """
    return {key: registry_windows(found, closes) for key, found in histories(rows).items()}


def id_order(change_id: str) -> tuple[int, int, str]:
    """Sort key of a change ID, oldest first, as Azure encodes it: `<Int64.MaxValue - ticks>_<guid>` (the last
    segment of the row's `id`), so a LATER change has a SMALLER number. An ID without that number sorts after
    every encoded one, by its text."""
    name = change_id.rstrip("/").rsplit("/", 1)[-1]
    number, underscore, _ = name.partition("_")
    if underscore and number.isdigit() and len(number) <= 20:
        return (0, -int(number), name)
    return (1, 0, name)


def _ordered(records: list[ChangeRecord]) -> list[ChangeRecord]:
    """Oldest first. Timestamps have millisecond precision, so a script's writes can tie: within a tie, follow
    the snapshot chain (a change starts from the snapshot the previous change produced) where it exists, else the
    order the change IDs encode (`id_order`)."""
    out: list[ChangeRecord] = []
    by_time: dict[datetime, list[ChangeRecord]] = {}
    for record in records:
        by_time.setdefault(record.at, []).append(record)
    for at in sorted(by_time):
        tied = sorted(by_time[at], key=lambda r: id_order(r.change_id))
        produced = {r.new_snapshot for r in tied if r.new_snapshot}
        starts = [r for r in tied if r.previous_snapshot not in produced]
        chain: list[ChangeRecord] = []
        by_previous = {r.previous_snapshot: r for r in tied if r.previous_snapshot}
        for start in starts:
            current: ChangeRecord | None = start
            while current is not None and current not in chain:
                chain.append(current)
                current = by_previous.get(current.new_snapshot) if current.new_snapshot else None
        out.extend(chain + [r for r in tied if r not in chain])
    return out


def registry_windows(records: Sequence[ChangeRecord], closes: Closes = _nobody) -> tuple[Window, ...]:
    """One registry's records (oldest first, as `histories` orders them) -> its windows, oldest first."""
    open_: dict[str, Window] = {}
    done: list[Window] = []

    def close(window: Window, record: ChangeRecord, closer: str) -> Window:
        return Window(window.registry_id, window.property, window.value, window.opened_at, window.opened_by,
                      record.at, record.changed_by, closer, window.opened_correlation, record.correlation_id,
                      window.opened_client, record.client_type)

    for record in records:
        if record.change_type == "delete":
            for path in list(open_):
                done.append(close(open_.pop(path), record, CLOSED_BY_DELETION))
            continue
        for change in record.changes:
            watched = BY_CHANGE_KEY[change.path]
            new = watched.default if change.new is None else change.new
            previous = watched.default if change.previous is None else change.previous
            now_exposed = new == watched.exposed
            was_exposed = previous == watched.exposed
            current = open_.get(watched.path)
            if now_exposed and current is None:
                open_[watched.path] = Window(record.registry_id, watched.path, new, record.at, record.changed_by,
                                             None, "", STILL_OPEN, record.correlation_id, "", record.client_type)
            elif not now_exposed and (current is not None or was_exposed):
                if current is None:     # opened before the history we hold
                    current = Window(record.registry_id, watched.path, previous, None, "", None, "", STILL_OPEN)
                done.append(close(current, record, CLOSED_BY_RESPONDER if closes(record, change) else CLOSED_BY_PERSON))
                open_.pop(watched.path, None)
    ordered = sorted([*done, *open_.values()],
                     key=lambda w: (w.opened_at or w.closed_at or datetime.max.replace(tzinfo=timezone.utc),
                                    w.property))
    return tuple(ordered)


def as_exposure(window: Window, until: datetime | None = None) -> Exposure:
    """The window as recorded and alerted (display-safe text throughout)."""
    closed_by = CLOSED_BY_RESPONDER if window.closer == CLOSED_BY_RESPONDER else display_text(window.closed_by)
    return Exposure(property=window.property, opened_at=iso(window.opened_at), closed_at=iso(window.closed_at),
                    seconds=window.seconds(until), opened_by=display_text(window.opened_by), closed_by=closed_by,
                    source="change-history", sentence=window.sentence(until), key=window.key,
                    rule_id=window.watched.rule_id)


def remediation_exposure(event_time: str, caller: str, properties: Iterable[str], verified_at: datetime) -> Exposure:
    """How long a registry the responder just closed was exposed, without asking anyone: from the event's time
    (the write that opened it) until the responder's verified write. Unknown start when there is no event time
    (a sweep or a re-check: the sweep fills it from change history when it has it)."""
    opened = parse_time(event_time)
    if opened is not None and opened > verified_at:      # another clock ahead of ours: never a negative window
        opened = verified_at
    seconds = None if opened is None else round((verified_at - opened).total_seconds(), 3)
    paths = ", ".join(properties)
    who = display_text(caller) or "unknown"
    span = f"for {seconds:g} s" if seconds is not None else "for an unknown time"
    since = f"since {iso(opened)} (write by {who})" if opened else "since an unknown time"
    sentence = f"Registry was open {span}: {paths} exposed {since}, closed by the responder at {iso(verified_at)}"
    return Exposure(property=paths, opened_at=iso(opened), closed_at=iso(verified_at), seconds=seconds,
                    opened_by=who if opened else "", closed_by=CLOSED_BY_RESPONDER, source="event-time",
                    sentence=sentence)


def parse_since(text: str) -> float:
    """"7d", "36h", "90m", "600s" (or plain seconds) -> seconds; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhms]?)\s*", text or "")
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 7d, 36h, 90m)")
    unit = {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 1}[match.group(2)]
    return float(match.group(1)) * unit


__all__ = [
    "CLOSED_BY_DELETION",
    "CLOSED_BY_PERSON",
    "CLOSED_BY_RESPONDER",
    "STILL_OPEN",
    "WATCHED",
    "ChangeRecord",
    "Window",
    "as_exposure",
    "display_text",
    "histories",
    "id_order",
    "iso",
    "parse_row",
    "parse_since",
    "parse_time",
    "registry_windows",
    "remediation_exposure",
    "windows",
]
