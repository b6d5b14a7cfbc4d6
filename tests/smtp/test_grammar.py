"""Command-argument grammar: paths, domains, address literals, parameters (RFC 5321 4.1.2, RFC 6531)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.smtp import replies
from postroom.smtp.errors import RemoteProtocolError
from postroom.smtp.grammar import (
    is_domain,
    parse_address_literal,
    parse_auth,
    parse_bdat,
    parse_helo,
    parse_mail,
    parse_params,
    parse_path,
    parse_rcpt,
)
from postroom.smtp.types import Address, Reply

BAD = replies.BAD_RECIPIENT_ADDRESS


def refusal(call: object, *args: object, **kwargs: object) -> Reply:
    assert callable(call)
    with pytest.raises(RemoteProtocolError) as info:
        call(*args, **kwargs)
    return info.value.reply


# --- paths ----------------------------------------------------------------------------------------


def test_simple_path_parses_local_part_domain_and_rest() -> None:
    assert parse_path("<a.b+c@example.com> SIZE=1", bad=BAD) == (
        Address("a.b+c", "example.com"),
        (),
        "SIZE=1",
    )


def test_null_path_is_none() -> None:
    assert parse_path("<>", bad=BAD) == (None, (), "")


def test_quoted_local_part_is_unquoted_and_unescaped() -> None:
    address, _, rest = parse_path('<"john \\"jd\\" doe"@example.com>', bad=BAD)
    assert address == Address('john "jd" doe', "example.com")
    assert rest == ""


def test_quoted_local_part_may_hold_angle_bracket_and_at_sign() -> None:
    address, _, _ = parse_path('<"a>b@c"@example.com>', bad=BAD)
    assert address == Address("a>b@c", "example.com")


def test_source_route_is_recorded_and_ignored() -> None:
    address, route, _ = parse_path("<@relay.one,@relay.two:user@example.com>", bad=BAD)
    assert address == Address("user", "example.com")
    assert route == ("relay.one", "relay.two")


@pytest.mark.parametrize(
    "path",
    [
        "<a@b",  # no closing bracket
        "<a@b>x",  # junk after the path
        "<@relay user@example.com>",  # route without colon
        "<@,@relay:user@example.com>",  # empty route hop
        "<a..b@example.com>",
        "<.a@example.com>",
        "<a.@example.com>",
        "<a b@example.com>",
        "<a@-example.com>",
        "<a@example-.com>",
        "<a@example..com>",
        "<a@example.com.>",
        "<a@exa_mple.com>",
        "<a@>",
        "<@example.com>",
        "<example.com>",
        '<"unterminated@example.com>',
        '<""@example.com>',
        "<a@[300.1.1.1]>",
        "<a@[1.2.3]>",
        "<a@[IPv6:zz::1]>",
        "<a@[IPv6:fe80::1%eth0]>",
        "<a@[tag:general]>",
        "<a\x01b@example.com>",
    ],
)
def test_malformed_paths_are_refused_with_the_given_reply(path: str) -> None:
    assert refusal(parse_path, path, bad=BAD) == BAD


def test_ipv4_and_ipv6_address_literals_are_kept_as_given() -> None:
    assert parse_path("<a@[192.0.2.1]>", bad=BAD)[0] == Address("a", "[192.0.2.1]")
    assert parse_path("<a@[IPv6:2001:db8::1]>", bad=BAD)[0] == Address("a", "[IPv6:2001:db8::1]")


def test_utf8_local_part_and_domain_parse() -> None:
    address, _, _ = parse_path("<用户@例子.广告>", bad=BAD)
    assert address == Address("用户", "例子.广告")
    assert address.needs_smtputf8


def test_local_part_over_64_octets_is_address_too_long() -> None:
    assert refusal(parse_path, f"<{'a' * 65}@example.com>", bad=BAD) == replies.ADDRESS_TOO_LONG
    assert parse_path(f"<{'a' * 64}@example.com>", bad=BAD)[0] is not None


def test_utf8_local_part_is_measured_in_octets() -> None:
    assert refusal(parse_path, f"<{'é' * 33}@example.com>", bad=BAD) == replies.ADDRESS_TOO_LONG


def test_path_over_256_octets_is_address_too_long() -> None:
    domain = ".".join(["d" * 60] * 4)  # 243 octets
    assert refusal(parse_path, f"<{'a' * 20}@{domain}>", bad=BAD) == replies.ADDRESS_TOO_LONG


def test_postmaster_without_domain_only_where_allowed() -> None:
    assert parse_path("<POSTMASTER>", bad=BAD, postmaster=True)[0] == Address("Postmaster", "")
    assert refusal(parse_path, "<postmaster>", bad=BAD) == BAD


# --- domains --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "domain", ["localhost", "a.b", "x-1.example", "1.2.3.4", "例子.广告", "a" * 63 + ".com"]
)
def test_valid_domains(domain: str) -> None:
    assert is_domain(domain)


@pytest.mark.parametrize(
    "domain", ["", ".", "a.", "-a", "a-", "a_b", "a b", "a" * 64 + ".com", "a." * 128 + "a"]
)
def test_invalid_domains(domain: str) -> None:
    assert not is_domain(domain)


def test_address_literal_rejects_non_literals() -> None:
    assert parse_address_literal("[127.0.0.1]") == "[127.0.0.1]"
    assert parse_address_literal("[ipv6:::1]") == "[ipv6:::1]"
    assert parse_address_literal("127.0.0.1") is None
    assert parse_address_literal("[]") is None
    assert parse_address_literal("[01.2.3.4]") is None


# --- parameters -----------------------------------------------------------------------------------


def test_params_keys_are_upper_cased_and_valueless_keys_map_to_none() -> None:
    assert parse_params("size=10 SmtpUtf8  body=8bitmime") == {
        "SIZE": "10",
        "SMTPUTF8": None,
        "BODY": "8bitmime",
    }


@pytest.mark.parametrize("text", ["=x", "-A=1", "A=", "A=b=c", "A\x01=1", "SIZE=1 size=2"])
def test_bad_or_duplicate_params_are_501_5_5_4(text: str) -> None:
    assert refusal(parse_params, text) == replies.PARAMETER_SYNTAX


def test_mail_fields() -> None:
    mail = parse_mail("FROM:<a@b.test> SIZE=1000 BODY=8bitmime SMTPUTF8 AUTH=<>")
    assert (mail.size, mail.body, mail.smtputf8) == (1000, "8BITMIME", True)
    assert mail.reverse_path == Address("a", "b.test")


def test_mail_tolerates_one_space_after_colon_and_any_case() -> None:
    assert parse_mail("from: <a@b.test>").reverse_path == Address("a", "b.test")


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        ("FROM:a@b.test", replies.MAIL_SYNTAX),
        ("TO:<a@b.test>", replies.MAIL_SYNTAX),
        ("FROM:  <a@b.test>", replies.MAIL_SYNTAX),
        ("FROM:<a@@b.test>", replies.BAD_SENDER_ADDRESS),
        ("FROM:<a@b.test> SIZE=ten", replies.BAD_SIZE_PARAMETER),
        ("FROM:<a@b.test> SIZE", replies.BAD_SIZE_PARAMETER),
        ("FROM:<a@b.test> BODY=9BIT", replies.BAD_BODY_PARAMETER),
        ("FROM:<a@b.test> SMTPUTF8=yes", replies.PARAMETER_SYNTAX),
        ("FROM:<a@b.test> AUTH", replies.PARAMETER_SYNTAX),
        ("FROM:<a@b.test> RET=BODY", replies.BAD_RET_PARAMETER),
        ("FROM:<a@b.test> X-RET=FULL", replies.UNKNOWN_PARAMETER),
    ],
)
def test_mail_refusals(args: str, reply: Reply) -> None:
    assert refusal(parse_mail, args) == reply


def test_rcpt_with_null_path_or_parameters_is_refused() -> None:
    assert refusal(parse_rcpt, "TO:<>") == replies.BAD_RECIPIENT_ADDRESS
    assert refusal(parse_rcpt, "TO:<a@b.test> X-NOTIFY=NEVER") == replies.UNKNOWN_PARAMETER
    assert refusal(parse_rcpt, "FROM:<a@b.test>") == replies.RCPT_SYNTAX


def test_rcpt_source_route() -> None:
    rcpt = parse_rcpt("TO:<@hop.test:user@c.test>")
    assert (rcpt.forward_path, rcpt.source_route) == (Address("user", "c.test"), ("hop.test",))


# --- other verbs ----------------------------------------------------------------------------------


def test_helo_accepts_domain_or_literal_only() -> None:
    assert parse_helo(" client.test ", extended=True).domain == "client.test"
    assert parse_helo("[IPv6:::1]", extended=False).domain == "[IPv6:::1]"
    for bad in ("", "two words", "bad_name", "[999.1.1.1]"):
        assert refusal(parse_helo, bad, extended=True) == replies.HELO_SYNTAX


def test_bdat_arguments() -> None:
    assert parse_bdat("0 LAST") == parse_bdat("0 last")
    assert parse_bdat("0 LAST").last
    assert parse_bdat("1000").size == 1000
    for bad in ("", "x", "-1", "1 FIRST", "1 LAST more", "1" * 21):
        assert refusal(parse_bdat, bad) == replies.BDAT_SYNTAX


def test_auth_arguments() -> None:
    assert parse_auth("plain").mechanism == "PLAIN"
    assert parse_auth("PLAIN =").initial_response == ""
    assert parse_auth("PLAIN AGFiAGM=").initial_response == "AGFiAGM="
    for bad in ("", "PLAIN not*base64", "PL@IN", "PLAIN a b"):
        assert refusal(parse_auth, bad) == replies.PARAMETER_SYNTAX


# --- round trip -----------------------------------------------------------------------------------

_ATEXT = "abcxyzABCXYZ0189!#$%&'*+-/=?^_`{|}~é中"
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_domains = st.lists(_label, min_size=1, max_size=4).map(".".join) | st.sampled_from(
    ["[192.0.2.7]", "[IPv6:2001:db8::7]"]
)
_dot_atoms = st.lists(st.text(_ATEXT, min_size=1, max_size=8), min_size=1, max_size=3).map(".".join)
_quoted = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("é中"), min_size=1)
_local_parts = (_dot_atoms | _quoted).filter(
    lambda local: len(Address(local, "x").quoted_local_part().encode()) <= 64
)


@settings(max_examples=200)
@given(local_part=_local_parts, domain=_domains)
def test_address_to_text_and_back_is_identity(local_part: str, domain: str) -> None:
    address = Address(local_part, domain)
    assert parse_path(f"<{address}>", bad=BAD) == (address, (), "")
