"""Bounces: the recipients ``Queue.record`` gave up on become a DSN queued from ``<>`` to the sender.

It chooses the route of the bounce (local or remote) and queues it; the report itself is dsn.py's.
Never a bounce for a bounce: ``Queue.record`` leaves out messages from the null sender. Each report comes
from the queue's report outbox and leaves it in the DSN's own commit; one that cannot be queued now stays
there and comes back through ``Queue.claim_reports`` (the scheduler asks), so none is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from postroom.delivery.dsn import DsnSettings, build_dsn
from postroom.observe.log import Logger, sanitize
from postroom.queue import Envelope, FailedMessage, Queue, QueueError, Recipient

__all__ = ["Bouncer", "route_recipient"]


def route_recipient(address: str, *, local_domains: Collection[str]) -> Recipient:
    """A Recipient for ``address``: local (mailbox lower-cased) when its domain is ours, else smtp (local
    part kept, domain lower-cased)."""
    local, _, domain = address.rpartition("@")
    if domain.lower() in {name.lower() for name in local_domains}:
        return Recipient(address=address, mailbox=address.lower())
    return Recipient(address=address, mailbox=f"{local}@{domain.lower()}", transport="smtp")


class Bouncer:
    """Queues one DSN per failed message (on the event loop that runs the queue)."""

    def __init__(
        self,
        *,
        queue: Queue,
        hostname: str,
        local_domains: Collection[str],
        clock: Callable[[], float],
        log: Logger,
    ) -> None:
        self._queue = queue
        self._hostname = hostname
        self._local_domains = tuple(local_domains)
        self._clock = clock
        self._log = log

    def set_local_domains(self, domains: Collection[str]) -> None:
        """[local] domains after a reload: a report to a sender there is delivered locally from now on."""
        self._local_domains = tuple(domains)

    async def bounce(self, failed: Sequence[FailedMessage]) -> None:
        """Queues one DSN per report. A report that fails stays in the outbox (retried after the claim
        lease); the others still go."""
        for message in failed:
            if not message.sender:  # RFC 5321 4.5.5: never a bounce for a bounce
                continue
            try:
                await self._bounce_one(message)
            except QueueError as exc:  # disk full, say: the report waits in the outbox
                self._log.error(
                    "delivery.bounce_failed",
                    queue_id=message.queue_id,
                    report_id=message.report_id,
                    error=str(exc),
                )
            except Exception as exc:  # a bug with this one report: say so loudly, keep it, do the rest
                self._log.failure(
                    "delivery.bounce_failed", exc, queue_id=message.queue_id, report_id=message.report_id
                )

    async def _bounce_one(self, message: FailedMessage) -> None:
        settings = DsnSettings(
            reporting_mta=self._hostname,
            boundary=f"=_{message.queue_id}",
            # one message may get several reports (a delay warning, then the failure): each its own id
            message_id=f"{message.queue_id}.{message.report_id or 0}.dsn@{self._hostname}",
        )
        report = build_dsn(message, settings=settings, now=self._clock())
        writer = self._queue.open_spool()
        writer.write(report)
        recipient = route_recipient(message.sender, local_domains=self._local_domains)
        envelope = Envelope(sender="", recipients=(recipient,), helo=self._hostname)
        bounce_id = await self._queue.commit(writer, envelope, report_id=message.report_id)
        self._log.info(
            "delivery.bounced",
            queue_id=message.queue_id,
            dsn_id=bounce_id,
            sender=sanitize(message.sender),
            rcpts=len(message.recipients),
            actions=",".join(sorted({recipient.action for recipient in message.recipients})),
            report_id=message.report_id,
        )
