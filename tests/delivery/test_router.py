"""Routing: local recipients, remote groups by (message, domain), our own domains never leave."""

from __future__ import annotations

from postroom.delivery.router import Router
from postroom.queue import DueRecipient


def _due(queue_id: str, idx: int, mailbox: str, transport: str = "smtp") -> DueRecipient:
    return DueRecipient(queue_id, idx, mailbox, mailbox, "s@ours.test", 1, 0.0, None, transport)  # type: ignore[arg-type]


def test_groups_by_message_and_domain_and_keeps_our_domains_local() -> None:
    router = Router(local_domains=("Ours.test",), remote=None)
    due = [
        _due("m1", 0, "a@x.test"),
        _due("m1", 1, "b@y.test"),
        _due("m1", 2, "c@x.test"),
        _due("m2", 0, "d@x.test"),
        _due("m2", 1, "e@ours.test", "local"),
        _due("m2", 2, "Bob@OURS.test"),
    ]
    local, groups = router.split(due)
    assert [(r.queue_id, r.idx, r.mailbox) for r in local] == [
        ("m2", 1, "e@ours.test"),
        ("m2", 2, "bob@ours.test"),
    ]
    assert [[(r.queue_id, r.idx) for r in group] for group in groups] == [
        [("m1", 0), ("m1", 2)],
        [("m1", 1)],
        [("m2", 0)],
    ]


async def test_without_a_remote_courier_remote_groups_wait() -> None:
    router = Router(local_domains=(), remote=None)
    outcomes = await router.deliver([_due("m1", 0, "a@x.test")])
    assert outcomes[0].result == "temporary"


def test_a_domain_made_local_by_a_reload_stays_home_from_then_on() -> None:
    router = Router(local_domains=("ours.test",), remote=None)
    queued_before = _due("m1", 0, "Carol@New.test")  # queued for SMTP before the domain became ours
    assert router.split([queued_before])[0] == []
    router.set_local_domains(("ours.test", "NEW.test"))
    local, groups = router.split([queued_before])
    assert ([r.mailbox for r in local], groups) == (["carol@new.test"], [])
