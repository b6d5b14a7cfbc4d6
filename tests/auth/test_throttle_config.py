"""The [auth] section sets the login throttle's numbers; bad combinations are refused at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.auth.throttle import LoginThrottle, ThrottleSettings, Verdict
from postroom.config import ConfigError, parse_config
from postroom.store import open_database


def test_auth_section_drives_the_throttle(tmp_path: Path) -> None:
    config = parse_config(
        {
            "auth": {
                "throttle_free_failures": 1,
                "throttle_max_delay": 3,
                "throttle_lockout_failures": 4,
                "throttle_window": 60,
            }
        }
    )
    settings = ThrottleSettings.from_config(config.auth)
    assert settings == ThrottleSettings(free_failures=1, max_delay=3.0, lockout_failures=4, window=60.0)
    db = open_database(tmp_path / "db")
    throttle = LoginThrottle(db=db, settings=settings)
    delays = []
    for second in range(4):
        delays.append(throttle.verdict(ip="192.0.2.1", user="a@x.test", now=second).delay)
        throttle.failed(ip="192.0.2.1", user="a@x.test", now=second)
    assert delays == [0.0, 1.0, 2.0, 3.0]
    assert throttle.verdict(ip="192.0.2.1", user="a@x.test", now=4) == Verdict(locked=True, delay=0.0)
    assert not throttle.verdict(ip="192.0.2.1", user="a@x.test", now=64).locked
    db.close()


def test_defaults_are_3_free_then_1_2_4_8_seconds_and_lockout_at_10_for_15_minutes() -> None:
    assert ThrottleSettings.from_config(parse_config({}).auth) == ThrottleSettings()


@pytest.mark.parametrize(
    "values",
    [{"throttle_lockout_failures": 3}, {"throttle_window": 0}, {"throttle_max_delay": -1}],
)
def test_bad_auth_settings_are_refused_naming_the_key(values: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="auth"):
        parse_config({"auth": values})
