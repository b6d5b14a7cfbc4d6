"""delivery/slots.py: connection caps in total and per domain, changed while slots are taken."""

from __future__ import annotations

import asyncio
import contextlib

from postroom.delivery.slots import ConnectionSlots


async def _hold(slots: ConnectionSlots, domain: str, entered: list[str], release: asyncio.Event) -> None:
    async with slots.slot(domain):
        entered.append(domain)
        await release.wait()


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_caps_in_total_and_per_domain_hold_back_the_next_connection() -> None:
    slots = ConnectionSlots(total=3, per_domain=2)
    entered: list[str] = []
    release = asyncio.Event()
    tasks = [asyncio.create_task(_hold(slots, d, entered, release)) for d in ("a", "a", "a", "b", "c")]
    await _settle()
    assert sorted(entered) == ["a", "a", "b"]  # the third "a" waits for its domain, "c" for the total
    assert slots.taken == 3
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert sorted(entered) == ["a", "a", "a", "b", "c"]
    assert slots.taken == 0


async def test_raising_the_caps_lets_waiters_in_and_lowering_them_holds_new_ones_back() -> None:
    slots = ConnectionSlots(total=1, per_domain=1)
    entered: list[str] = []
    release = asyncio.Event()
    first = [asyncio.create_task(_hold(slots, d, entered, release)) for d in ("a", "a", "b")]
    await _settle()
    assert entered == ["a"]
    slots.update(total=5, per_domain=2)
    await _settle()
    assert sorted(entered) == ["a", "a", "b"]

    slots.update(total=3, per_domain=1)  # three taken: nothing closes, nothing new comes in
    later = asyncio.create_task(_hold(slots, "c", entered, release))
    await _settle()
    assert "c" not in entered
    release.set()
    await asyncio.wait_for(asyncio.gather(*first, later), 5)
    assert entered[-1] == "c"
    assert slots.taken == 0


async def test_a_waiter_cut_short_takes_no_slot() -> None:
    slots = ConnectionSlots(total=1, per_domain=1)
    release = asyncio.Event()
    entered: list[str] = []
    holder = asyncio.create_task(_hold(slots, "a", entered, release))
    await _settle()
    waiter = asyncio.create_task(_hold(slots, "b", entered, release))
    await _settle()
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    release.set()
    await asyncio.wait_for(holder, 5)
    assert entered == ["a"]
    assert slots.taken == 0
