"""The facade: SPF + DKIM + DMARC for one message, the Authentication-Results header, and the decision."""

from __future__ import annotations

import authres
import pytest

from postroom.config.schema import SenderAuthSettings
from postroom.dns import DnsResolver
from postroom.policy.authresults import authentication_results
from postroom.policy.dkim import DkimVerdict
from postroom.policy.dmarc import DmarcVerdict, OrganizationalDomains
from postroom.policy.sender_auth import JUNK_MARKER, SenderAuth
from postroom.policy.spf import SpfVerdict
from tests.helpers.dns import DnsServer
from tests.policy.signing import make_key, message, publish, resolver_for, sign

CLIENT = "192.0.2.10"


@pytest.fixture(scope="module")
def organizations() -> OrganizationalDomains:
    return OrganizationalDomains()


@pytest.fixture
def resolver(dns_server: DnsServer) -> DnsResolver:
    return resolver_for(dns_server)


def sender_auth(
    resolver: DnsResolver, organizations: OrganizationalDomains, **settings: object
) -> SenderAuth:
    return SenderAuth(
        settings=SenderAuthSettings(**settings),  # type: ignore[arg-type]
        resolver=resolver,
        hostname="mx.postroom.test",
        organizations=organizations,
    )


def parse(header: bytes) -> dict[str, str]:
    """method -> result, parsed back by authres (so the header is well-formed RFC 8601)."""
    text = header.decode().replace("\r\n\t", " ").strip()
    parsed = authres.all_features().parse(text)
    assert parsed.authserv_id == "mx.postroom.test"
    return {f"{r.method}:{i}": r.result for i, r in enumerate(parsed.results)}


def test_header_parses_back_and_cleans_values() -> None:
    header = authentication_results(
        authserv_id="mx.postroom.test",
        sender='a"b@example.test',
        helo="client.test",
        spf=(
            SpfVerdict("pass", "mailfrom", "example.test", 'matched "ip4"'),
            SpfVerdict("none", "helo", "c"),
        ),
        dkim=(
            DkimVerdict(
                "fail", domain="example.test", selector="s", identity="@example.test", signature="abc"
            ),
        ),
        dmarc=DmarcVerdict("fail", "example.test", "reject", "not aligned"),
        ehlo="ours",
    )
    assert header.startswith(b"Authentication-Results: mx.postroom.test;\r\n\t")
    for part in (b"policy.ehlo=ours", b"policy.dmarc=reject", b"header.b=abc"):
        assert part in header
    assert parse(header) == {"spf:0": "pass", "spf:1": "none", "dkim:2": "fail", "dmarc:3": "fail"}


async def test_signed_aligned_message_passes_everything(
    dns_server: DnsServer, resolver: DnsResolver, organizations: OrganizationalDomains
) -> None:
    key = make_key()
    publish(dns_server, key, domain="example.test")
    dns_server.add("example.test", "TXT", f"v=spf1 ip4:{CLIENT} -all")
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject")
    signed = sign(message(from_address="a@example.test"), key, domain="example.test")
    verdict = await sender_auth(resolver, organizations).check(
        client_ip=CLIENT, helo="client.test", sender="a@example.test", message=signed
    )
    assert (verdict.action, verdict.refusal) == ("deliver", None)
    assert parse(verdict.header) == {"spf:0": "pass", "spf:1": "none", "dkim:2": "pass", "dmarc:3": "pass"}
    assert verdict.summary["dkim"] == "pass:example.test"


@pytest.mark.parametrize(
    ("policy", "settings", "action", "refusal"),
    [
        ("reject", {}, "reject", "dmarc"),
        ("reject", {"dmarc_reject": False}, "deliver", None),
        ("reject", {"dmarc_reject": False, "quarantine": "junk"}, "junk", None),
        ("quarantine", {}, "deliver", None),
        ("quarantine", {"quarantine": "junk"}, "junk", None),
        ("none", {"quarantine": "junk"}, "deliver", None),
    ],
)
async def test_dmarc_failure_and_the_policy(  # noqa: PLR0917 - fixtures and parameters
    dns_server: DnsServer,
    resolver: DnsResolver,
    organizations: OrganizationalDomains,
    policy: str,
    settings: dict[str, object],
    action: str,
    refusal: str | None,
) -> None:
    dns_server.add("_dmarc.forged.test", "TXT", f"v=DMARC1; p={policy}")
    verdict = await sender_auth(resolver, organizations, **settings).check(
        client_ip=CLIENT,
        helo="client.test",
        sender="x@elsewhere.test",
        message=message(from_address="a@forged.test"),
    )
    assert (verdict.dmarc.result, verdict.action, verdict.refusal) == ("fail", action, refusal)
    assert verdict.header.startswith(JUNK_MARKER) == (action == "junk")


async def test_spf_fail_is_rejected_only_when_configured(
    dns_server: DnsServer, resolver: DnsResolver, organizations: OrganizationalDomains
) -> None:
    dns_server.add("example.test", "TXT", "v=spf1 -all")
    facts = {"client_ip": CLIENT, "helo": "client.test", "sender": "a@example.test"}
    data = message(from_address="a@example.test")
    default = await sender_auth(resolver, organizations).check(**facts, message=data)
    assert (default.spf.result, default.action) == ("fail", "deliver")
    strict = await sender_auth(resolver, organizations, reject_spf_fail=True).check(**facts, message=data)
    assert (strict.action, strict.refusal) == ("reject", "spf")


async def test_message_over_the_size_cap_is_not_dkim_verified_nor_rejected(
    dns_server: DnsServer, resolver: DnsResolver, organizations: OrganizationalDomains
) -> None:
    key = make_key()
    publish(dns_server, key, domain="example.test")
    dns_server.add("_dmarc.example.test", "TXT", "v=DMARC1; p=reject")
    signed = sign(
        message(from_address="a@example.test", body="x" * 2000 + "\r\n"), key, domain="example.test"
    )
    auth = sender_auth(resolver, organizations, dkim_max_size=1000)
    assert auth.read_limit == 1001
    verdict = await auth.check(
        client_ip=CLIENT, helo="c.test", sender="a@example.test", message=signed[:1001]
    )
    assert verdict.dkim[0].result == "none"
    assert "over 1000" in verdict.dkim[0].reason
    assert (verdict.dmarc.result, verdict.action) == ("fail", "deliver")
    assert not any(query.name.startswith("sel._domainkey") for query in dns_server.queries)


def test_ehlo_notes_and_refusal(resolver: DnsResolver, organizations: OrganizationalDomains) -> None:
    auth = sender_auth(resolver, organizations)
    assert auth.ehlo_note("MX.postroom.test", CLIENT) == "ours"
    assert auth.ehlo_note("[198.51.100.1]", CLIENT) == "foreign-literal"
    assert auth.ehlo_note(f"[{CLIENT}]", CLIENT) is None
    assert auth.ehlo_note("[IPv6:2001:db8::1]", "2001:db8::1") is None
    assert auth.ehlo_note("client.test", CLIENT) is None
    assert not auth.refuses_ehlo("mx.postroom.test", CLIENT)
    strict = sender_auth(resolver, organizations, reject_ehlo_impersonation=True)
    assert strict.refuses_ehlo("mx.postroom.test", CLIENT)
    assert not strict.refuses_ehlo("client.test", CLIENT)
