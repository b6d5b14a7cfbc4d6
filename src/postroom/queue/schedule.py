"""The retry schedule as one pure function of attempts and time: when to try again, or None to give up.

No clock and no randomness of its own: ``now`` and an optional random source are arguments.
"""

from __future__ import annotations

from collections.abc import Callable

from postroom.config.schema import QueueSettings

__all__ = ["next_attempt_at"]

_JITTER = 0.1  # with a random source, intervals stretch by up to 10 % so retries of a burst spread out


def next_attempt_at(
    *,
    attempts: int,
    now: float,
    received_at: float,
    settings: QueueSettings,
    random: Callable[[], float] | None = None,
) -> float | None:
    """When to retry after ``attempts`` failed attempts (1 after the first), or None when the message expired.

    The n-th failure waits ``retry_schedule[n-1]``; past the end the last interval repeats. A message gets
    one last attempt at ``received_at + max_lifetime``; a failure at or after that moment is final. An empty
    schedule means no retries at all. ``random`` returns a float in [0, 1) (e.g. ``random.Random().random``).
    """
    deadline = received_at + settings.max_lifetime
    if now >= deadline or not settings.retry_schedule:
        return None
    schedule = settings.retry_schedule
    interval = schedule[min(max(attempts, 1), len(schedule)) - 1]
    if random is not None:
        interval *= 1.0 + _JITTER * random()
    return min(now + interval, deadline)
