"""`postroom queue bounce ID...`: fail a message's pending recipients now and send the sender a DSN through
the normal bounce path (``Queue.record`` gives the failures, ``Bouncer`` queues the report), beside a
running server: the recipients are claimed first (the server's scheduler leaves claimed ones alone), and a
recipient whose delivery is under way is left to that delivery. The server delivers the DSN at its next poll.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from postroom.cli.accounts import CommandError
from postroom.config import Config
from postroom.delivery.bounce import Bouncer
from postroom.observe.log import Logger
from postroom.queue import Outcome, Queue
from postroom.queue.admin import AdminError, open_queue_admin, parse_queue_id

__all__ = ["BOUNCE_DETAIL", "register"]

BOUNCE_DETAIL = "returned to the sender by the postmaster (postroom queue bounce)"
_STATUS = "5.0.0"  # RFC 3463: other undefined status; no more specific code says "the operator gave up"


@dataclass(frozen=True, slots=True)
class _Bounced:
    queue_id: str
    failed: int  # recipients failed now
    busy: int  # recipients left to a delivery under way
    dsn: bool  # a DSN was queued (not for the null sender)


def register(queue_commands: Any) -> None:
    parser = queue_commands.add_parser(
        "bounce", help="fail a message's waiting recipients now and send the sender a bounce (DSN)"
    )
    parser.add_argument("queue_ids", metavar="ID", nargs="+", help="queue ids (as in 'queued as ...')")
    parser.set_defaults(handler=bounce_command)


def bounce_command(args: argparse.Namespace, config: Config) -> int:
    queue_ids = list(dict.fromkeys(parse_queue_id(text) for text in args.queue_ids))
    try:
        with open_queue_admin(database_path=config.database_path, queue_dir=config.queue_dir) as admin:
            for queue_id in queue_ids:
                admin.message(queue_id)  # every id must be in the queue before anything changes
    except AdminError as exc:
        raise CommandError(str(exc)) from None
    with open(os.devnull, "w") as quiet:  # the CLI's own lines go to the log file, not the terminal
        log = Logger(stream=quiet, level=config.log.level, file=config.log_file)
        try:
            results = asyncio.run(_bounce(config, queue_ids, log))
        finally:
            log.close()
    for item in results:
        line = f"{item.queue_id}: {item.failed} recipient(s) failed"
        line += ", bounce queued to the sender" if item.dsn else ", no bounce (null sender or none failed)"
        if item.busy:
            line += f"; {item.busy} being delivered right now, left to that delivery"
        print(line)
    return 0


async def _bounce(config: Config, queue_ids: list[str], log: Logger) -> list[_Bounced]:
    queue = Queue(
        settings=config.queue,
        queue_dir=config.queue_dir,
        database_path=config.database_path,
        log=log.bind(room="queue"),
    )
    await queue.start()
    try:
        bouncer = Bouncer(
            queue=queue,
            hostname=config.hostname,
            local_domains=config.local.domains,
            clock=time.time,
            log=log.bind(room="delivery"),
        )
        results = []
        with open_queue_admin(database_path=config.database_path, queue_dir=config.queue_dir) as admin:
            for queue_id in queue_ids:
                try:
                    idxs, busy = admin.claim_for_bounce(queue_id, lease=config.queue.claim_lease)
                except AdminError as exc:  # it left the queue meanwhile
                    print(f"postroom: {exc}", file=sys.stderr)
                    continue
                outcomes = [Outcome(queue_id, idx, "permanent", BOUNCE_DETAIL, _STATUS) for idx in idxs]
                failed = queue.record(outcomes)
                await bouncer.bounce(failed)
                dsn = any(message.sender for message in failed)
                results.append(_Bounced(queue_id, len(idxs), busy, dsn))
        return results
    finally:
        await queue.stop()
