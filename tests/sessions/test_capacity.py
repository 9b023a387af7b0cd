"""Admission into pipelines: places, a first-come-first-served queue, system_full."""

from __future__ import annotations

import asyncio

import pytest

from facesocial.errors import SystemFull
from facesocial.realtime.connection import TokenBucket
from facesocial.sessions.capacity import PipelinePool


def pool(m: int, n: int, timeout: float) -> PipelinePool:
    return PipelinePool(m, n, timeout, lambda: {"yunet": "cpu"})


def test_places_then_queue_then_system_full() -> None:
    async def scenario() -> None:
        p = pool(2, 2, 0.3)
        got = [await p.admit(f"s{i}") for i in range(4)]
        assert sorted(x.index for x in got) == [0, 0, 1, 1]  # spread over both pipelines
        assert all(x.devices == {"yunet": "cpu"} for x in got)
        positions: list[int] = []

        async def queued(pos: int) -> None:
            positions.append(pos)

        with pytest.raises(SystemFull):
            await p.admit("late", queued)
        assert positions == [1] and p.refused == 1 and p.waiting() == 0
        # a waiter gets the first place that comes free, in arrival order
        first = asyncio.create_task(p.admit("w1"))
        second = asyncio.create_task(p.admit("w2"))
        await asyncio.sleep(0.05)
        p.release("s1")
        assert (await first).index == got[1].index
        assert not second.done()
        p.release("s2")
        assert (await second).index == got[2].index
        assert p.active() == 4
        p.close()

    asyncio.run(scenario())


def test_token_bucket() -> None:
    now = [0.0]
    b = TokenBucket(rate=2.0, burst=2.0, clock=lambda: now[0])
    assert [b.take() for _ in range(3)] == [True, True, False]
    now[0] = 0.5
    assert b.take() and not b.take()
