"""links.py: the datagram links between the SMTP workers and the delivery process, on real socket pairs."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from postroom.app.links import (
    Links,
    forward_events,
    make_links,
    notify_commits,
    receive_events,
    receive_wakes,
)
from postroom.observe.log import Logger

_WAIT = 5.0  # seconds any one expected event may take (bounds every wait below)


@pytest.fixture
def links() -> Iterator[Links]:
    made = make_links()
    try:
        yield made
    finally:
        made.close()


async def test_each_commit_wakes_the_delivery_side(links: Links) -> None:
    committed, woken = asyncio.Event(), asyncio.Event()
    waker = notify_commits(committed, links.wake_out)
    stop = receive_wakes(links.wake_in, woken)
    try:
        assert woken.is_set()  # at its start the delivery side looks once anyway
        woken.clear()
        committed.set()
        await asyncio.wait_for(woken.wait(), _WAIT)
        assert not committed.is_set()  # taken: the next commit sets it again
        woken.clear()
        committed.set()
        await asyncio.wait_for(woken.wait(), _WAIT)
    finally:
        stop()
        waker.cancel()


async def test_only_delivery_records_reach_worker_0_s_listeners_and_are_not_written_again(
    links: Links,
) -> None:
    delivery_stream, worker_stream = io.StringIO(), io.StringIO()
    delivery_log = Logger(stream=delivery_stream, fmt="json").bind(worker=1, role="delivery")
    worker_log = Logger(stream=worker_stream, fmt="json")
    heard: list[dict[str, Any]] = []
    worker_log.add_listener(heard.append)
    forward_events(delivery_log, links.events_out)
    stop = receive_events(links.events_in, worker_log)
    try:
        delivery_log.info("message.removed", queue_id="a")
        delivery_log.info("delivery.delivered", queue_id="a", rcpt="alice@postroom.test")
        delivery_log.info("delivery.failed", queue_id="b", error="x" * 40_000)  # too large: dropped
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)
    finally:
        stop()
    assert [(r["event"], r["queue_id"], r["worker"], r["role"]) for r in heard] == [
        ("delivery.delivered", "a", 1, "delivery")
    ]
    assert worker_stream.getvalue() == ""  # its line is the delivery process's to write
    assert len(delivery_stream.getvalue().splitlines()) == 3


async def test_a_full_link_drops_instead_of_blocking(links: Links) -> None:
    committed = asyncio.Event()
    waker = notify_commits(committed, links.wake_out)
    try:
        for _ in range(20_000):  # far more than the socket holds; nobody reads
            committed.set()
            await asyncio.sleep(0)
        assert not waker.done()  # still running: a full socket neither blocked it nor ended it
    finally:
        waker.cancel()


async def test_a_datagram_that_is_not_a_record_is_ignored(links: Links) -> None:
    log = Logger(stream=io.StringIO())
    heard: list[dict[str, Any]] = []
    log.add_listener(heard.append)
    stop = receive_events(links.events_in, log)
    try:
        links.events_out.send(b"\xff not json")
        links.events_out.send(json.dumps(["a", "list"]).encode())
        links.events_out.send(json.dumps({"event": "delivery.delivered"}).encode())
        for _ in range(100):
            if heard:
                break
            await asyncio.sleep(0.02)
    finally:
        stop()
    assert heard == [{"event": "delivery.delivered"}]
