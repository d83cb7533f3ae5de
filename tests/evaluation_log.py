"""Reading outcomes the way an operator does: from the structured `dlp.evaluation` log line each evaluation writes."""

from __future__ import annotations

import logging
import threading

LOGGER = "dlp.evaluation"


class Evaluations(logging.Handler):
    """Collects the `dlp.evaluation` records (thread-safe: handlers run on the worker's thread pool).

    Use as a context manager to attach it to the logger for the block."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        info = dict(getattr(record, "dlp", {}))
        message = record.getMessage()
        info["reason"] = message.split(" reason=", 1)[1].split(" ", 1)[0] if " reason=" in message else ""
        with self._guard:
            self.records.append(info)

    def actions(self) -> list[tuple[str, str]]:
        with self._guard:
            return [(r["action"], r["reason"]) for r in self.records]

    def take(self, registry_id: str | None = None) -> list[dict]:
        """The records so far (only one registry's, when given), forgetting all of them."""
        with self._guard:
            records, self.records = self.records, []
        if registry_id is None:
            return records
        return [r for r in records if r.get("registryId", "").lower() == registry_id.lower()]

    def __enter__(self) -> Evaluations:
        logger = logging.getLogger(LOGGER)
        logger.addHandler(self)
        logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(LOGGER).removeHandler(self)
