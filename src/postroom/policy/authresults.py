"""The Authentication-Results header (RFC 8601) from SPF, DKIM and DMARC verdicts, built with ``authres``.

Only the header's text is made here; where it goes (on top of the stored message) is the session's job.
One result per line, folded with a tab, so that no line comes near the 998-octet limit (RFC 5322 2.1.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import authres
import authres.dmarc
from authres.core import AuthenticationResultProperty

from postroom.policy.dkim import DkimVerdict
from postroom.policy.dmarc import DmarcVerdict
from postroom.policy.spf import SpfVerdict

__all__ = ["EhloNote", "authentication_results"]

# What the client's EHLO name says about it: it claims to be us, or an address literal not its own.
EhloNote = Literal["ours", "foreign-literal"] | None

_MAX_VALUE = 200


def _clean(text: str, *, limit: int = _MAX_VALUE) -> str:
    """A value fit for a header: printable, no quotes or backslashes (they would end a quoted reason)."""
    return "".join(c for c in text if c.isprintable() and c not in '"\\')[:limit]


def _spf(verdict: SpfVerdict, *, sender: str, helo: str, ehlo: EhloNote) -> authres.AuthenticationResult:
    reason = _clean(verdict.reason) or None
    if verdict.identity == "helo":
        result = authres.SPFAuthenticationResult(result=verdict.result, smtp_helo=_clean(helo), reason=reason)
        if ehlo is not None:
            result.properties.append(AuthenticationResultProperty("policy", "ehlo", ehlo))
        return result
    mailfrom = _clean(sender) or f"postmaster@{_clean(helo)}"
    return authres.SPFAuthenticationResult(result=verdict.result, smtp_mailfrom=mailfrom, reason=reason)


def _dkim(verdict: DkimVerdict) -> authres.AuthenticationResult:
    if verdict.result == "none" or not verdict.domain:
        return authres.DKIMAuthenticationResult(result=verdict.result, reason=_clean(verdict.reason) or None)
    result = authres.DKIMAuthenticationResult(
        result=verdict.result,
        reason=_clean(verdict.reason) or None,
        header_d=_clean(verdict.domain),
        header_i=_clean(verdict.identity) or None,
        header_s=_clean(verdict.selector) or None,
    )
    if verdict.signature:
        # RFC 6008: header.b tells apart two signatures of one domain
        result.properties.append(AuthenticationResultProperty("header", "b", _clean(verdict.signature)))
    return result


def _dmarc(verdict: DmarcVerdict) -> authres.AuthenticationResult:
    return authres.dmarc.DMARCAuthenticationResult(
        result=verdict.result,
        reason=_clean(verdict.reason) or None,
        header_from=_clean(verdict.from_domain) or None,
        policy=verdict.policy if verdict.result in ("pass", "fail") else None,
    )


def authentication_results(
    *,
    authserv_id: str,
    sender: str,
    helo: str,
    spf: Sequence[SpfVerdict],
    dkim: Sequence[DkimVerdict],
    dmarc: DmarcVerdict | None,
    ehlo: EhloNote = None,
) -> bytes:
    """The whole header field, CRLF-terminated, ready to prepend to a message."""
    results = [_spf(verdict, sender=sender, helo=helo, ehlo=ehlo) for verdict in spf]
    results += [_dkim(verdict) for verdict in dkim]
    if dmarc is not None:
        results.append(_dmarc(dmarc))
    if not results:
        return f"Authentication-Results: {authserv_id}; none\r\n".encode()
    lines = ";\r\n\t".join(str(result) for result in results)
    return f"Authentication-Results: {authserv_id};\r\n\t{lines}\r\n".encode()
