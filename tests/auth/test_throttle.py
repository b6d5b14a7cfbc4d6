"""Login throttling: progressive delay, cool-down, per IP and per account, kept across restarts."""

from __future__ import annotations

from pathlib import Path

from postroom.auth.throttle import LoginThrottle, ThrottleSettings, Verdict
from postroom.store import open_database

SETTINGS = ThrottleSettings(free_failures=2, max_delay=4.0, lockout_failures=5, window=100.0)


def test_delay_grows_then_locks_then_forgets_after_the_window(tmp_path: Path) -> None:
    db = open_database(tmp_path / "db")
    throttle = LoginThrottle(db=db, settings=SETTINGS)
    delays = []
    for second in range(5):
        delays.append(throttle.verdict(ip="192.0.2.1", user="alice@x.test", now=second))
        throttle.failed(ip="192.0.2.1", user="alice@x.test", now=second)
    assert [v.delay for v in delays] == [0.0, 0.0, 1.0, 2.0, 4.0]
    assert throttle.verdict(ip="192.0.2.1", user="alice@x.test", now=5) == Verdict(locked=True, delay=0.0)
    # the account is locked from any address; another account from a fresh address is not
    assert throttle.verdict(ip="198.51.100.7", user="alice@x.test", now=5).locked
    assert throttle.verdict(ip="198.51.100.7", user="bob@x.test", now=5) == Verdict(locked=False, delay=0.0)
    assert throttle.verdict(ip="192.0.2.1", user="alice@x.test", now=200) == Verdict(locked=False, delay=0.0)
    db.close()


def test_failures_survive_a_restart_and_success_forgives_the_account(tmp_path: Path) -> None:
    db = open_database(tmp_path / "db")
    throttle = LoginThrottle(db=db, settings=SETTINGS)
    for second in range(5):
        throttle.failed(ip="192.0.2.1", user="alice@x.test", now=second)
    db.close()
    again = open_database(tmp_path / "db")
    throttle = LoginThrottle(db=again, settings=SETTINGS)
    assert throttle.verdict(ip="203.0.113.9", user="alice@x.test", now=10).locked
    throttle.succeeded(ip="203.0.113.9", user="alice@x.test")
    assert not throttle.verdict(ip="203.0.113.9", user="alice@x.test", now=10).locked
    assert throttle.verdict(ip="192.0.2.1", user="", now=10).locked  # the guessing address stays locked
    again.close()
