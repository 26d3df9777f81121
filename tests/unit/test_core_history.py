"""An episode's history: what a copy by replay applies again, bounded in bytes."""

from __future__ import annotations

from openenv_ws.core.history import EpisodeHistory
from openenv_ws.protocol import Error, ErrorCode, Reset, Result, Step, pack


def step(n: int) -> Step:
    return Step(seq=n, action=pack(n))


def ok(n: int) -> Result:
    return Result(seq=n, observation=pack(n))


def test_a_reset_starts_the_history_again_and_steps_follow_it():
    history = EpisodeHistory(max_bytes=10_000)
    assert not history.started
    history.record(Reset(seq=1), ok(1), 10)
    history.record(step(2), ok(2), 10)
    history.record(step(3), Error(seq=3, code=ErrorCode.VALIDATION, message="bad"), 10)
    history.record(step(4), ok(4), 10)
    assert history.started and history.steps == 2 and len(history.entries) == 4
    history.record(Reset(seq=5), ok(5), 10)
    assert history.steps == 0 and [e.request.seq for e in history.entries] == [5]


def test_a_failed_reset_changes_nothing():
    history = EpisodeHistory(max_bytes=10_000)
    history.record(Reset(seq=1), ok(1), 10)
    history.record(step(2), ok(2), 10)
    history.record(Reset(seq=3), Error(seq=3, code=ErrorCode.ENV_ERROR, message="no"), 10)
    assert history.steps == 1 and len(history.entries) == 2


def test_a_prefix_ends_after_the_kth_step_that_returned_a_result():
    history = EpisodeHistory(max_bytes=10_000)
    history.record(Reset(seq=1), ok(1), 10)
    for n in range(2, 7):
        history.record(step(n), ok(n), 10)
    assert [e.request.seq for e in history.prefix(0)] == [1]
    assert [e.request.seq for e in history.prefix(2)] == [1, 2, 3]
    copy = history.copy(2)
    assert copy.steps == 2 and [e.request.seq for e in copy.entries] == [1, 2, 3]
    assert len(history.entries) == 6  # the original is untouched


def test_past_its_byte_bound_the_history_is_dropped_until_the_next_reset():
    history = EpisodeHistory(max_bytes=100)
    history.record(Reset(seq=1), ok(1), 40)
    history.record(step(2), ok(2), 40)
    history.record(step(3), ok(3), 40)
    assert history.dropped and history.entries == [] and history.steps == 2
    history.record(step(4), ok(4), 40)
    assert history.dropped and history.steps == 3
    history.record(Reset(seq=5), ok(5), 40)
    assert not history.dropped and len(history.entries) == 1
