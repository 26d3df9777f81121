"""How the warm pools are sized and fed, without an engine: the demand window (a fake clock), the
memory budget, and the start slots' order (sessions before refills)."""

from __future__ import annotations

import anyio
import pytest

from openenv_ws.sandbox.docker.demand import DemandWindow
from openenv_ws.sandbox.docker.memory import FIRST_GUESS, MemoryBudget
from openenv_ws.sandbox.docker.slots import StartSlots
from openenv_ws.units import parse_size


def test_a_wave_spread_over_a_few_seconds_counts_as_one_and_is_forgotten_after_the_window():
    demand = DemandWindow(window=60, span=10)
    for i in range(64):
        demand.record(1000.0 + i * 0.05)  # 64 opens over ~3 s
    assert demand.peak(1004.0) == 64
    demand.record(1030.0, opens=10)  # a smaller wave later: the peak stays the larger one
    assert demand.peak(1031.0) == 64
    assert demand.peak(1062.0) == 10  # the first wave left the window
    assert demand.peak(1100.0) == 0  # demand fell: the pool shrinks to its floor


def test_opens_further_apart_than_the_span_are_separate_waves():
    demand = DemandWindow(window=600, span=5)
    demand.record(0.0, opens=8)
    demand.record(10.0, opens=8)
    assert demand.peak(11.0) == 8
    demand.record(13.0, opens=8)
    assert demand.peak(14.0) == 16  # 10.0 and 13.0 are within 5 s
    with pytest.raises(ValueError):
        DemandWindow(window=5, span=10)


def test_sizes_read_as_the_engine_reads_them():
    assert parse_size("512m") == 512 << 20
    assert parse_size("4g") == 4 << 30
    assert parse_size("1.5G") == 3 << 29
    assert parse_size("64MiB") == 64 << 20
    assert parse_size(1024) == 1024
    with pytest.raises(ValueError):
        parse_size("lots")


def test_the_budget_charges_what_was_measured_and_reserves_for_starts():
    budget = MemoryBudget(limit=100 << 20)
    assert budget.estimate("echo") == FIRST_GUESS
    reserved = budget.reserve("echo")  # a refill under way
    assert budget.used == FIRST_GUESS
    budget.unreserve(reserved)
    budget.charge("c1", "echo")  # pooled, not yet measured: the estimate
    budget.charge("c1", "echo", 20 << 20)  # measured
    assert budget.used == 20 << 20 and budget.estimate("echo") == 20 << 20
    for name in ("c2", "c3", "c4"):
        assert budget.fits("echo")
        budget.charge(name, "echo", 20 << 20)
    assert budget.fits("echo")  # 80 MiB + 20 fits 100
    budget.charge("c5", "echo", 30 << 20)  # one came out larger: over the limit, and larger estimates
    assert budget.excess() == 10 << 20 and not budget.fits("echo")
    budget.release("c5")
    assert budget.excess() == 0
    assert MemoryBudget(None).fits("echo")


class FakePool:
    """A starter whose needs the test sets; it records the order in which starts ran."""

    def __init__(self, name: str, log: list[tuple[str, bool]], waiting_since: float = float("inf")) -> None:
        self.name, self.log, self.since = name, log, waiting_since
        self.urgent = self.refill = 0
        self.release = anyio.Event()

    def urgent_need(self) -> int:
        return self.urgent

    def refill_need(self) -> int:
        return self.refill

    def waiting_since(self) -> float:
        return self.since

    def begin_start(self, urgent: bool) -> int:
        if urgent:
            self.urgent -= 1
        else:
            self.refill -= 1
        self.log.append((self.name, urgent))
        return 0

    async def run_start(self, token: int) -> None:
        await self.release.wait()


async def test_a_free_slot_goes_to_the_longest_waiting_session_before_any_refill():
    log: list[tuple[str, bool]] = []
    async with anyio.create_task_group() as tg:
        slots = StartSlots(2, tg)
        refilling, late, early = FakePool("refill", log), FakePool("late", log, 2.0), FakePool("early", log, 1.0)
        for pool in (refilling, late, early):
            slots.add(pool)
        refilling.refill = 5
        slots.kick()
        assert log == [("refill", False), ("refill", False)] and slots.busy == 2  # never above the limit
        late.urgent = early.urgent = 1
        slots.kick()
        assert len(log) == 2  # no free slot: they wait for one
        refilling.release.set()  # both refills end; each freed slot goes to a waiting session, oldest first
        await anyio.wait_all_tasks_blocked()
        assert log[2:4] == [("early", True), ("late", True)]
        for pool in (late, early):
            pool.release.set()
        await anyio.wait_all_tasks_blocked()
        assert log[4:] == [("refill", False)] * 3  # then the refill takes what is left
