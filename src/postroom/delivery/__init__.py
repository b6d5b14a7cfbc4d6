"""Delivery: takes queued work to its destination: local Maildirs, other domains' MX hosts, DSN bounces."""

from postroom.delivery.bounce import Bouncer
from postroom.delivery.courier import Courier
from postroom.delivery.local import LocalCourier, trace_headers
from postroom.delivery.outcome import classify
from postroom.delivery.remote import RemoteCourier
from postroom.delivery.router import Router
from postroom.delivery.scheduler import Scheduler

__all__ = [
    "Bouncer",
    "Courier",
    "LocalCourier",
    "RemoteCourier",
    "Router",
    "Scheduler",
    "classify",
    "trace_headers",
]
