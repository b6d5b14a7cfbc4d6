"""MAIL and RCPT decisions without a socket: local recipients, relaying, submission ownership, DNSBL at RCPT,
greylisting, DSN parameters (server/envelope.py)."""

from __future__ import annotations

import ipaddress

import pytest

from postroom.auth.accounts import Accounts
from postroom.config.schema import GreylistSettings, LimitsSettings
from postroom.observe.log import Logger
from postroom.policy.limits import RateLimits
from postroom.policy.limitstore import LimitStore
from postroom.queue import Recipient
from postroom.server.envelope import EnvelopeRules
from postroom.smtp import events, replies
from postroom.smtp.errors import SmtpError
from postroom.smtp.types import Address
from tests.helpers.fakes import FakeClock

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


def _rules(accounts: Accounts, client_ip: str = "192.0.2.1", **options: object) -> EnvelopeRules:
    return EnvelopeRules(client_ip=client_ip, accounts=accounts, relay_networks=TRUSTED, **options)  # type: ignore[arg-type]


def _rcpt(text: str, **fields: object) -> events.Rcpt:
    local, _, domain = text.partition("@")
    return events.Rcpt(forward_path=Address(local, domain), **fields)  # type: ignore[arg-type]


def _mail(text: str | None) -> events.Mail:
    if text is None:
        return events.Mail(reverse_path=None)
    local, _, domain = text.partition("@")
    return events.Mail(reverse_path=Address(local, domain))


def _refusal(call: object, *args: object, **kwargs: object) -> SmtpError:
    with pytest.raises(SmtpError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


def test_local_alias_gives_each_mailbox_with_dsn_params(accounts: Accounts) -> None:
    event = _rcpt("Team@example.test", notify=("SUCCESS", "DELAY"), orcpt=("rfc822", "team@example.test"))
    found = _rules(accounts).recipients(event, user=None, sender="x@elsewhere.test")
    assert found == [
        Recipient("Team@example.test", mailbox, "local", "SUCCESS,DELAY", "rfc822;team@example.test")
        for mailbox in ("alice@example.test", "bob@example.test")
    ]


def test_unknown_local_recipient_is_550_5_1_1(accounts: Accounts) -> None:
    error = _refusal(_rules(accounts).recipients, _rcpt("nobody@example.test"), user=None, sender="")
    assert error.reply == replies.NO_SUCH_USER


def test_relay_is_denied_to_a_stranger_and_by_source_route(accounts: Accounts) -> None:
    rules = _rules(accounts)
    error = _refusal(rules.recipients, _rcpt("x@elsewhere.test"), user=None, sender="")
    assert error.reply == replies.RELAY_DENIED
    routed = _rcpt("x@elsewhere.test", source_route=("relay.test",))
    assert _refusal(rules.recipients, routed, user=None, sender="").reply == replies.SOURCE_ROUTE_RELAY_DENIED
    assert rules.may_relay(None) is False


def test_relay_for_a_user_or_a_trusted_network_lowercases_the_domain(accounts: Accounts) -> None:
    expected = [Recipient("X@Elsewhere.TEST", "X@elsewhere.test", "smtp", "", "")]
    by_user = _rules(accounts).recipients(_rcpt("X@Elsewhere.TEST"), user="alice@example.test", sender="")
    assert by_user == expected
    trusted = _rules(accounts, client_ip="10.1.2.3")
    assert trusted.recipients(_rcpt("X@Elsewhere.TEST"), user=None, sender="") == expected


def test_relay_to_an_address_literal_is_denied_even_for_a_user(accounts: Accounts) -> None:
    error = _refusal(
        _rules(accounts).recipients, _rcpt("x@[192.0.2.9]"), user="alice@example.test", sender=""
    )
    assert error.reply == replies.RELAY_DENIED


def test_dnsbl_listing_refuses_every_rcpt_but_not_a_user(accounts: Accounts) -> None:
    listed = replies.client_blocklisted("192.0.2.1", "bl.example.test")
    rules = _rules(accounts, rcpt_refusal=listed)
    assert _refusal(rules.recipients, _rcpt("alice@example.test"), user=None, sender="").reply == listed
    found = rules.recipients(_rcpt("alice@example.test"), user="bob@example.test", sender="")
    assert [r.mailbox for r in found] == ["alice@example.test"]


def test_submission_needs_auth_and_an_owned_sender(accounts: Accounts) -> None:
    rules = _rules(accounts, submission=True)
    mail = _mail("alice@example.test")
    assert _refusal(rules.check_mail, mail, user=None, helo="c", messages=0).reply == replies.AUTH_REQUIRED
    not_owned = _refusal(rules.check_mail, mail, user="bob@example.test", helo="c", messages=0)
    assert not_owned.reply == replies.SENDER_NOT_OWNED
    null_sender = _refusal(rules.check_mail, _mail(None), user="bob@example.test", helo="c", messages=0)
    assert null_sender.reply == replies.SENDER_NOT_OWNED
    rules.check_mail(mail, user="alice@example.test", helo="c", messages=0)  # no refusal


def test_mx_takes_any_sender_without_auth(accounts: Accounts) -> None:
    _rules(accounts).check_mail(_mail("someone@elsewhere.test"), user=None, helo="c", messages=0)


def test_rates_refuse_mail_after_the_per_connection_limit(
    accounts: Accounts, limit_store: LimitStore, clock: FakeClock, log: Logger
) -> None:
    limits = RateLimits(
        settings=LimitsSettings(messages_per_connection=2),
        greylist=GreylistSettings(),
        relay_networks=TRUSTED,
        store=limit_store,
        clock=clock,
        log=log,
    )
    rules = _rules(accounts, rate_limits=limits)
    rules.check_mail(_mail("a@elsewhere.test"), user=None, helo="c", messages=1)
    error = _refusal(rules.check_mail, _mail("a@elsewhere.test"), user=None, helo="c", messages=2)
    assert error.reply == replies.TOO_MANY_MESSAGES


def test_greylisting_holds_the_first_rcpt_and_skips_without_a_sender(
    accounts: Accounts, limit_store: LimitStore, clock: FakeClock, log: Logger
) -> None:
    limits = RateLimits(
        settings=LimitsSettings(),
        greylist=GreylistSettings(enabled=True),
        relay_networks=TRUSTED,
        store=limit_store,
        clock=clock,
        log=log,
    )
    rules = _rules(accounts, rate_limits=limits)
    error = _refusal(rules.recipients, _rcpt("alice@example.test"), user=None, sender="a@elsewhere.test")
    assert error.reply == replies.GREYLISTED
    assert rules.recipients(_rcpt("alice@example.test"), user=None, sender=None)  # no MAIL: not counted
