"""Which recorded outcomes the sender hears about: NOTIFY (RFC 3461 4.1), success notices, delay warnings.

``annotate`` runs inside ``Index.record``'s transaction: it reads each recipient's DSN parameters, drops the
failure reports NOTIFY refuses, adds the success notices (Action: delivered / relayed) and the one delay
warning per recipient (Action: delayed, RFC 3464) that it asks for, and gathers each reported message's RET
and ENVID. It builds no report (delivery/dsn.py does) and queues nothing (delivery/bounce.py does).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from postroom.config.schema import QueueSettings
from postroom.queue.model import FailedRecipient, Outcome

if TYPE_CHECKING:  # index.py imports this module
    from postroom.queue.index import Recorded

__all__ = ["ORIGINAL_MAX", "DsnEnvelope", "annotate", "wants_report"]

ORIGINAL_MAX = 1_048_576  # RET=FULL returns the whole message up to this size; a bigger one: its headers
_NOTIFY_KEY = {"failed": "FAILURE", "delayed": "DELAY", "delivered": "SUCCESS", "relayed": "SUCCESS"}
# RFC 3461 4.1: without NOTIFY, an MTA reports failures and may warn of delays (as Postfix and sendmail do).
_DEFAULT_NOTIFY = ("FAILURE", "DELAY")


@dataclass(frozen=True, slots=True)
class DsnEnvelope:
    """A reported message's RET and ENVID, and the whole message when RET=FULL asked for it (inline only:
    spooled messages are read from their file by the caller)."""

    ret: str
    envid: str
    original: bytes | None = None


def wants_report(notify: str, action: str) -> bool:
    """Whether a recipient with this NOTIFY ("" when not given) is to hear of ``action`` (RFC 3464 2.3.3)."""
    words = tuple(notify.split(",")) if notify else _DEFAULT_NOTIFY
    return _NOTIFY_KEY.get(action, "") in words


def annotate(
    conn: sqlite3.Connection,
    recorded: Sequence[tuple[Outcome, Recorded]],
    *,
    now: float,
    settings: QueueSettings,
) -> tuple[list[Recorded], dict[str, DsnEnvelope]]:
    """Each recorded outcome with its report (``failure``) set or cleared as NOTIFY says, and the DSN
    envelope of every message that has a report. Delay warnings are marked sent here (once each)."""
    out: list[Recorded] = []
    envelopes: dict[str, DsnEnvelope] = {}
    for outcome, done in recorded:
        row = conn.execute(
            "SELECT r.notify, r.orcpt, r.delay_warned, m.sender, m.received_at, m.dsn_ret, m.dsn_envid"
            " FROM recipients r JOIN messages m ON m.id = r.message_id WHERE r.message_id = ? AND r.idx = ?",
            (outcome.queue_id, outcome.idx),
        ).fetchone()
        if row is None:  # pragma: no cover - the row was just updated in this transaction
            out.append(done)
            continue
        notify, orcpt, sender = str(row[0]), str(row[1]), str(row[3])
        item = dataclasses.replace(done, sender=sender, received_at=float(row[4]))
        report = _report(
            outcome, item, notify=notify, orcpt=orcpt, warned=bool(row[2]), now=now, settings=settings
        )
        if report is not None and report.action == "delayed":
            conn.execute(
                "UPDATE recipients SET delay_warned = 1 WHERE message_id = ? AND idx = ?",
                (outcome.queue_id, outcome.idx),
            )
        if report is not None and sender and outcome.queue_id not in envelopes:
            envelopes[outcome.queue_id] = DsnEnvelope(str(row[5]), str(row[6]))
        out.append(dataclasses.replace(item, failure=report))
    for queue_id, envelope in list(envelopes.items()):
        if envelope.ret == "FULL":
            found = conn.execute(
                "SELECT data FROM bodies WHERE message_id = ? AND length(data) <= ?", (queue_id, ORIGINAL_MAX)
            ).fetchone()
            if found is not None:
                envelopes[queue_id] = dataclasses.replace(envelope, original=bytes(found[0]))
    return out, envelopes


def _report(
    outcome: Outcome,
    item: Recorded,
    *,
    notify: str,
    orcpt: str,
    warned: bool,
    now: float,
    settings: QueueSettings,
) -> FailedRecipient | None:
    if item.state == "failed" and item.failure is not None:
        if not wants_report(notify, "failed"):
            return None
        return dataclasses.replace(item.failure, orcpt=orcpt)
    if item.state == "delivered":
        action = outcome.success_action
        if not action or not wants_report(notify, action):
            return None
        return FailedRecipient(
            address=item.address,
            status=outcome.status if outcome.status.startswith("2.") else "2.0.0",
            detail=outcome.detail,
            remote_mta=outcome.remote_mta,
            action=action,
            orcpt=orcpt,
        )
    due = settings.delay_warning and now - item.received_at >= settings.delay_warning
    if item.state != "deferred" or warned or not due:
        return None
    return _delayed(outcome, item, notify=notify, orcpt=orcpt, settings=settings)


def _delayed(
    outcome: Outcome, item: Recorded, *, notify: str, orcpt: str, settings: QueueSettings
) -> FailedRecipient | None:
    if not wants_report(notify, "delayed"):
        return None
    return FailedRecipient(
        address=item.address,
        status=outcome.status if outcome.status.startswith("4.") else "4.0.0",
        detail=item.detail,
        remote_mta=outcome.remote_mta,
        diagnostic=outcome.diagnostic,
        action="delayed",
        orcpt=orcpt,
        will_retry_until=item.received_at + settings.max_lifetime,
    )
