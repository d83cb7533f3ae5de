"""Bursts of events for one registry, coalesced within one process.

A deployment fires several write events for one registry within a second (the registry, its
replications, private endpoint connections, tags). Each would cost a GET, and all but one would
find the same state. So, within one instance, the events for a registry form rounds:

* an event joins the open round of its registry, if that round's read has not started yet;
  otherwise it opens the next round, which starts when the current one has finished evaluating;
* a round is evaluated once, by the invocation that opened it (its "leader"), for all its events:
  every event it answers arrived before its read started, so no event is answered by a read that
  may predate its write;
* the others wait until that evaluation is recorded (so none is acknowledged before its answer is
  kept) and return the same evaluation; if it fails, they fail too and Event Grid delivers them again.

Across instances nothing changes: each instance reads once per round, and the Table lease still
makes one of them the writer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dlp.domain.model import Evaluation, Target, registry_key


class BurstFailed(RuntimeError):
    """The evaluation this event joined could not be finished: the event must be delivered again."""


@dataclass
class _Round:
    targets: list[Target] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    evaluation: Evaluation | None = None
    error: BaseException | None = None


@dataclass
class _Registry:
    turn: threading.Lock = field(default_factory=threading.Lock)    # one round of this registry at a time
    open: _Round | None = None                                      # the round events still join
    users: int = 0


class Bursts:
    """The rounds of every registry this process is evaluating (thread-safe)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._registries: dict[tuple[str, Any], _Registry] = {}

    def run(self, target: Target, mode: Any, *, evaluate: Callable[[list[Target]], Evaluation],
            finish: Callable[[Evaluation], Evaluation | None], wait_s: float) -> Evaluation:
        """Answer `target` with the evaluation of its round: evaluated here (`evaluate` with the round's targets,
        under the registry's turn, then `finish` to record it) if this event opened the round, else waited for
        for at most `wait_s`. `mode` keeps rounds of different enforce decisions apart."""
        key = (registry_key(target.registry_id), mode)
        with self._guard:
            slot = self._registries.setdefault(key, _Registry())
            slot.users += 1
            round_ = slot.open
            leader = round_ is None
            if round_ is None:
                round_ = slot.open = _Round()
            round_.targets.append(target)
        try:
            if not leader:
                return self._wait(round_, wait_s)
            return self._lead(slot, round_, evaluate, finish, wait_s)
        finally:
            with self._guard:
                slot.users -= 1
                if slot.users == 0 and self._registries.get(key) is slot:
                    del self._registries[key]

    def _lead(self, slot: _Registry, round_: _Round, evaluate: Callable[[list[Target]], Evaluation],
              finish: Callable[[Evaluation], Evaluation | None], wait_s: float) -> Evaluation:
        try:
            # Wait for the previous round to finish evaluating; past the budget, go ahead anyway (the Table lease
            # still keeps two writers apart: this only costs the read the turn would have saved).
            has_turn = slot.turn.acquire(timeout=max(0.0, wait_s))
            try:
                with self._guard:
                    if slot.open is round_:
                        slot.open = None        # the read starts now: later events wait for the next one
                round_.evaluation = evaluate(list(round_.targets))
            finally:
                if has_turn:
                    slot.turn.release()
            round_.evaluation = finish(round_.evaluation) or round_.evaluation    # as recorded
            return round_.evaluation
        except BaseException as exc:
            round_.error = exc
            raise
        finally:
            round_.done.set()

    def waiting(self, registry_id: str) -> int:
        """Events of this registry being answered now (evaluating or waiting): for tests and diagnostics."""
        key = registry_key(registry_id)
        with self._guard:
            return sum(slot.users for (k, _mode), slot in self._registries.items() if k == key)

    @staticmethod
    def _wait(round_: _Round, wait_s: float) -> Evaluation:
        if not round_.done.wait(timeout=max(0.0, wait_s)):
            raise BurstFailed("the evaluation this event joined did not finish in time")
        if round_.error is not None or round_.evaluation is None:
            raise BurstFailed(f"the evaluation this event joined failed: {round_.error!r}"[:500]) from round_.error
        return round_.evaluation
