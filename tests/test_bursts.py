"""dlp.responder.bursts on its own: which events share a read, and what a failure of the shared evaluation does to each.

The end-to-end burst (20 events, 2 GETs, 1 PATCH, one alert naming every caller) is in tests/test_responder.py;
here the rounds are driven by plain functions so every interleaving is forced, not hoped for.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dlp.domain.model import Context, Evaluation, Outcome, Target
from dlp.responder.bursts import BurstFailed, Bursts

REG = ("/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/"
       "Microsoft.ContainerRegistry/registries/acr1")


def target(event_id: str, registry_id: str = REG) -> Target:
    return Target(registry_id, Context(trigger="event", event_id=event_id, caller=f"{event_id}@contoso.com"))


def until(condition, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.002)


class Reads:
    """An `evaluate` whose reads are held until the test lets each one go."""

    def __init__(self) -> None:
        self.started: list[list[str]] = []
        self.release = [threading.Event() for _ in range(10)]
        self.fail_on: set[int] = set()
        self.recorded: list[str] = []

    def evaluate(self, targets: list[Target]) -> Evaluation:
        index = len(self.started)
        self.started.append([t.context.event_id for t in targets])
        assert self.release[index].wait(10)
        if index in self.fail_on:
            raise RuntimeError(f"read {index} failed")
        return Evaluation(f"evaluation-{index}", targets[0].registry_id, targets[0].context, "enforce", Outcome("none"))

    def finish(self, evaluation: Evaluation) -> None:
        self.recorded.append(evaluation.evaluation_id)


def test_events_arriving_while_a_read_is_in_flight_share_the_next_read_only():
    bursts, reads = Bursts(), Reads()
    with ThreadPoolExecutor(max_workers=8) as pool:
        def submit(event_id: str):
            return pool.submit(bursts.run, target(event_id), None, evaluate=reads.evaluate, finish=reads.finish,
                               wait_s=10)

        first = submit("e0")
        until(lambda: len(reads.started) == 1, "the first read started")
        waiting = [submit(f"e{i}") for i in range(1, 6)]
        until(lambda: bursts.waiting(REG) == 6, "five events wait")
        assert len(reads.started) == 1                     # nobody reads while a read of the registry is in flight
        reads.release[0].set()
        until(lambda: len(reads.started) == 2, "the next read started")
        late = submit("e6")                                # arrived after the second read started: a third read
        until(lambda: bursts.waiting(REG) == 6, "the late event waits")
        reads.release[1].set()
        reads.release[2].set()
        assert first.result(10).evaluation_id == "evaluation-0"
        assert {f.result(10).evaluation_id for f in waiting} == {"evaluation-1"}
        assert late.result(10).evaluation_id == "evaluation-2"
    assert reads.started == [["e0"], ["e1", "e2", "e3", "e4", "e5"], ["e6"]]
    assert reads.recorded == ["evaluation-0", "evaluation-1", "evaluation-2"]      # each recorded once
    assert bursts.waiting(REG) == 0


def test_a_failed_shared_evaluation_fails_every_event_it_answered():
    """None of them may be acknowledged: Event Grid delivers each again."""
    bursts, reads = Bursts(), Reads()
    reads.fail_on = {1}
    with ThreadPoolExecutor(max_workers=4) as pool:
        first = pool.submit(bursts.run, target("e0"), None, evaluate=reads.evaluate, finish=reads.finish, wait_s=10)
        until(lambda: len(reads.started) == 1, "the first read started")
        joined = [pool.submit(bursts.run, target(f"e{i}"), None, evaluate=reads.evaluate, finish=reads.finish,
                              wait_s=10) for i in (1, 2, 3)]
        until(lambda: bursts.waiting(REG) == 4, "three events wait")
        reads.release[0].set()
        reads.release[1].set()
        assert first.result(10).evaluation_id == "evaluation-0"
        outcomes = []
        for future in joined:
            with pytest.raises((RuntimeError, BurstFailed)) as raised:
                future.result(10)
            outcomes.append(type(raised.value))
    assert sorted(o.__name__ for o in outcomes) == ["BurstFailed", "BurstFailed", "RuntimeError"]   # leader's own
    assert reads.recorded == ["evaluation-0"]


def test_a_follower_that_waits_too_long_fails_rather_than_answering_late():
    bursts, reads = Bursts(), Reads()
    with ThreadPoolExecutor(max_workers=3) as pool:
        first = pool.submit(bursts.run, target("e0"), None, evaluate=reads.evaluate, finish=reads.finish, wait_s=10)
        until(lambda: len(reads.started) == 1, "the first read started")
        second = pool.submit(bursts.run, target("e1"), None, evaluate=reads.evaluate, finish=reads.finish, wait_s=10)
        until(lambda: bursts.waiting(REG) == 2, "the next round is open")
        third = pool.submit(bursts.run, target("e2"), None, evaluate=reads.evaluate, finish=reads.finish, wait_s=0)
        with pytest.raises(BurstFailed):
            third.result(10)
        reads.release[0].set()
        reads.release[1].set()
        first.result(10)
        assert second.result(10).evaluation_id == "evaluation-1"
    assert reads.started == [["e0"], ["e1", "e2"]]     # answered too late for e2: its event is delivered again


def test_other_registries_and_modes_read_at_once_the_same_registry_in_any_casing_waits():
    bursts, reads = Bursts(), Reads()
    other = REG[:-1] + "2"
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(bursts.run, target(f"e-{i}", registry_id), mode, evaluate=reads.evaluate,
                               finish=reads.finish, wait_s=10)
                   for i, (registry_id, mode) in enumerate(((REG, None), (other, None), (REG, True)))]
        until(lambda: len(reads.started) == 3, "three reads in flight at once")
        same = pool.submit(bursts.run, target("e-upper", REG.upper()), None, evaluate=reads.evaluate,
                           finish=reads.finish, wait_s=10)
        until(lambda: bursts.waiting(REG) == 3, "the same registry (other casing) waits")
        assert len(reads.started) == 3
        for event in reads.release:
            event.set()
        for future in (*futures, same):
            future.result(10)
    assert sorted(map(tuple, reads.started)) == [("e-0",), ("e-1",), ("e-2",), ("e-upper",)]
