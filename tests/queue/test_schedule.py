"""next_attempt_at: pure retry arithmetic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from postroom.config.schema import QueueSettings
from postroom.queue.schedule import next_attempt_at

SETTINGS = QueueSettings(retry_schedule=(60.0, 300.0, 900.0), max_lifetime=10_000.0)


def test_each_failure_waits_its_interval_then_the_last_repeats() -> None:
    waits = [
        next_attempt_at(attempts=n, now=1000.0, received_at=1000.0, settings=SETTINGS) for n in range(1, 6)
    ]
    assert waits == [1060.0, 1300.0, 1900.0, 1900.0, 1900.0]


def test_zero_attempts_counts_as_the_first() -> None:
    assert next_attempt_at(attempts=0, now=0.0, received_at=0.0, settings=SETTINGS) == 60.0


def test_the_last_attempt_is_at_the_deadline() -> None:
    assert next_attempt_at(attempts=9, now=9_500.0, received_at=0.0, settings=SETTINGS) == 10_000.0


def test_a_failure_at_or_after_the_deadline_gives_up() -> None:
    assert next_attempt_at(attempts=9, now=10_000.0, received_at=0.0, settings=SETTINGS) is None
    assert next_attempt_at(attempts=9, now=20_000.0, received_at=0.0, settings=SETTINGS) is None


def test_an_empty_schedule_means_no_retries() -> None:
    settings = QueueSettings(retry_schedule=(), max_lifetime=10_000.0)
    assert next_attempt_at(attempts=1, now=0.0, received_at=0.0, settings=settings) is None


def test_jitter_comes_only_from_the_random_source_given() -> None:
    plain = next_attempt_at(attempts=1, now=0.0, received_at=0.0, settings=SETTINGS)
    jittered = next_attempt_at(attempts=1, now=0.0, received_at=0.0, settings=SETTINGS, random=lambda: 0.5)
    assert plain == 60.0
    assert jittered == 63.0


@given(
    attempts=st.integers(min_value=0, max_value=1000),
    received_at=st.floats(min_value=0, max_value=1e9),
    age=st.floats(min_value=0, max_value=20_000),
    noise=st.floats(min_value=0, max_value=0.999),
)
def test_retry_is_always_later_and_never_past_the_deadline(
    attempts: int, received_at: float, age: float, noise: float
) -> None:
    now = received_at + age
    at = next_attempt_at(
        attempts=attempts, now=now, received_at=received_at, settings=SETTINGS, random=lambda: noise
    )
    if at is None:
        assert now >= received_at + SETTINGS.max_lifetime
    else:
        assert now < at <= received_at + SETTINGS.max_lifetime
