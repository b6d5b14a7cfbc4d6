"""MTA-STS: record and policy parsing (pure), and discovery through the loopback DNS server plus a real HTTPS
policy server on loopback with a certificate for mta-sts.<domain>."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from tests.helpers.dns import DnsServer
from tests.helpers.fakes import FakeClock, Records
from tests.helpers.https import PolicyServer

from postroom.config.schema import DnsSettings
from postroom.delivery.mta_sts import MtaSts, Policy, PolicyError, parse_policy, parse_sts_record
from postroom.dns.resolver import DnsResolver
from postroom.observe.log import Logger

POLICY = (
    "version: STSv1\r\nmode: enforce\r\nmx: mx1.remote.test\r\nmx: *.backup.remote.test\r\nmax_age: 86400\r\n"
)


# --- parsing --------------------------------------------------------------------------------------------


def test_the_sts_record_gives_its_id() -> None:
    assert parse_sts_record(["v=STSv1; id=20240101T000000"]) == "20240101T000000"
    assert parse_sts_record(["v=spf1 -all", "v=STSv1;id=abc;"]) == "abc"


@pytest.mark.parametrize(
    "records",
    [
        [],
        ["v=spf1 -all"],
        ["v=STSv1; id=one", "v=STSv1; id=two"],  # more than one: as if none (RFC 8461 3.1)
        ["v=STSv1; id=not-alnum"],
        ["v=STSv1"],
        ["v=STSv10; id=abc"],
    ],
)
def test_no_usable_sts_record(records: list[str]) -> None:
    assert parse_sts_record(records) is None


def test_a_policy_is_parsed_and_expires_after_max_age() -> None:
    policy = parse_policy(POLICY, policy_id="abc", now=1000.0)
    assert policy == Policy("enforce", ("mx1.remote.test", "*.backup.remote.test"), 86400, "abc", 87400.0)


def test_max_age_is_capped_at_a_year() -> None:
    text = "version: STSv1\nmode: testing\nmx: mx.remote.test\nmax_age: 9999999999\n"
    assert parse_policy(text).max_age == 31_557_600


@pytest.mark.parametrize(
    "text",
    [
        "mode: enforce\nmx: a.test\nmax_age: 10\n",
        "version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 10\n",
        "version: STSv1\nmode: strict\nmx: a.test\nmax_age: 10\n",
        "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: soon\n",
        "version: STSv1\nmode: enforce\nmax_age: 10\n",
    ],
)
def test_malformed_policies_are_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        parse_policy(text)


def test_mx_patterns_match_exactly_one_label_for_a_wildcard() -> None:
    policy = parse_policy(POLICY)
    assert policy.allows("MX1.remote.test.")
    assert policy.allows("a.backup.remote.test")
    assert not policy.allows("backup.remote.test")
    assert not policy.allows("a.b.backup.remote.test")
    assert not policy.allows("mx2.remote.test")
    assert not policy.allows("evil.test")


# --- discovery, fetch and cache over real DNS and HTTPS ----------------------------------------------------


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def policy_server(ca: trustme.CA) -> Iterator[PolicyServer]:
    with PolicyServer.running(ca, "mta-sts.remote.test", POLICY) as server:
        yield server


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


MakeSts = Callable[..., MtaSts]


@pytest.fixture
def make_sts(
    *,
    dns_server: DnsServer,
    policy_server: PolicyServer,
    ca_file: Path,
    tmp_path: Path,
    clock: FakeClock,
    log: Logger,
) -> MakeSts:
    """A new MtaSts (as after a restart) over the same DNS server, policy server and cache file."""

    def make(trusted: Path = ca_file) -> MtaSts:
        resolver = DnsResolver(settings=DnsSettings(nameservers=(dns_server.nameserver,), timeout=2))
        return MtaSts(
            resolver=resolver,
            cache_file=tmp_path / "mta-sts.json",
            clock=clock,
            log=log,
            port=policy_server.server_address[1],
            ca_file=trusted,
            timeout=5,
        )

    return make


@pytest.fixture
def published(dns_server: DnsServer) -> DnsServer:
    dns_server.add("_mta-sts.remote.test", "TXT", "v=STSv1; id=first")
    dns_server.add("mta-sts.remote.test", "A", "127.0.0.1")
    return dns_server


async def test_a_published_policy_is_fetched_over_https_and_cached(
    make_sts: MakeSts,
    published: DnsServer,
    policy_server: PolicyServer,
) -> None:
    sts = make_sts()
    policy = await sts.policy("Remote.test")
    assert policy is not None
    assert policy.mode == "enforce"
    assert policy.policy_id == "first"
    assert policy_server.requests == ["mta-sts.remote.test/.well-known/mta-sts.txt"]
    assert await sts.policy("remote.test") == policy
    assert len(policy_server.requests) == 1  # same id, not expired: no second fetch


async def test_a_new_id_or_an_expired_policy_is_fetched_again(
    make_sts: MakeSts,
    published: DnsServer,
    policy_server: PolicyServer,
    clock: FakeClock,
) -> None:
    sts = make_sts()
    await sts.policy("remote.test")
    clock.now += 86_401
    policy_server.body = POLICY.replace("enforce", "testing")
    policy = await sts.policy("remote.test")
    assert policy is not None
    assert policy.mode == "testing"
    assert len(policy_server.requests) == 2


async def test_the_cache_survives_a_restart_and_outlives_a_failing_fetch(
    make_sts: MakeSts,
    published: DnsServer,
    policy_server: PolicyServer,
    records: Records,
) -> None:
    await make_sts().policy("remote.test")
    # An attacker removes the record: after a restart the cached policy still holds, and is not fetched.
    published.remove("_mta-sts.remote.test", "TXT")
    restarted = make_sts()
    policy = await restarted.policy("remote.test")
    assert policy is not None
    assert policy.policy_id == "first"
    assert len(policy_server.requests) == 1
    # ... or announces a new id and breaks the policy host: the cached policy still holds.
    published.add("_mta-sts.remote.test", "TXT", "v=STSv1; id=second")
    policy_server.status = 404
    policy = await restarted.policy("remote.test")
    assert policy is not None
    assert policy.policy_id == "first"
    assert records.events("mta_sts.fetch_failed")


@pytest.mark.parametrize(
    "response",
    [(302, "text/plain", POLICY), (200, "text/html", POLICY), (200, "text/plain", "version: STSv1\n")],
)
async def test_a_bad_fetch_gives_no_policy(
    make_sts: MakeSts,
    published: DnsServer,
    policy_server: PolicyServer,
    records: Records,
    response: tuple[int, str, str],
) -> None:
    policy_server.status, policy_server.content_type, policy_server.body = response
    assert await make_sts().policy("remote.test") is None
    assert records.events("mta_sts.fetch_failed")


async def test_a_certificate_not_valid_for_the_policy_host_gives_no_policy(
    make_sts: MakeSts,
    published: DnsServer,
    tmp_path: Path,
    records: Records,
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    assert await make_sts(other).policy("remote.test") is None
    assert "CERTIFICATE_VERIFY_FAILED" in records.events("mta_sts.fetch_failed")[0]["error"]


async def test_no_record_means_no_policy_and_no_fetch(
    make_sts: MakeSts,
    dns_server: DnsServer,
    policy_server: PolicyServer,
) -> None:
    assert await make_sts().policy("remote.test") is None
    assert policy_server.requests == []


async def test_mode_none_withdraws_a_policy(
    make_sts: MakeSts,
    published: DnsServer,
    policy_server: PolicyServer,
) -> None:
    policy_server.body = "version: STSv1\nmode: none\nmax_age: 86400\n"
    assert await make_sts().policy("remote.test") is None
