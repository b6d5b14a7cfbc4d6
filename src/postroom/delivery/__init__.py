"""Delivery: takes queued work to its destination. Local Maildir delivery now; remote couriers next."""

from postroom.delivery.courier import Courier
from postroom.delivery.local import LocalCourier, trace_headers
from postroom.delivery.outcome import classify
from postroom.delivery.scheduler import Scheduler

__all__ = ["Courier", "LocalCourier", "Scheduler", "classify", "trace_headers"]
