"""The DSN parameters (RFC 3461) a queued recipient carries on to a next hop that offers DSN: pure.

RET and ENVID go on MAIL, NOTIFY and ORCPT on RCPT, xtext-encoded again. A recipient that came without an
ORCPT gets one naming its address as we received it (RFC 3461 4.2 allows a relay to add it), when that
address is ASCII. It does not decide whether the next hop offers DSN (remote.py asks the connection).
"""

from __future__ import annotations

from postroom.queue import DueRecipient
from postroom.smtp.xtext import encode_xtext

__all__ = ["mail_params", "rcpt_params"]


def mail_params(recipient: DueRecipient) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if recipient.ret:
        params["RET"] = recipient.ret
    if recipient.envid:
        params["ENVID"] = encode_xtext(recipient.envid)
    return params


def rcpt_params(recipient: DueRecipient) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if recipient.notify:
        params["NOTIFY"] = recipient.notify
    kind, _, address = recipient.orcpt.partition(";")
    if not address and recipient.address.isascii():
        kind, address = "rfc822", recipient.address
    if address:
        params["ORCPT"] = f"{kind};{encode_xtext(address)}"
    return params
