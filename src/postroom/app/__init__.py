"""The composition root: builds every part from the Config, wires them together, starts and stops them in
order; the only place that knows how the rooms fit together. root.py (the App), build.py (its parts),
reload.py (SIGHUP), run.py (running until a signal), workers.py (several processes: ``workers``)."""

from __future__ import annotations

from postroom.app.build import open_accounts
from postroom.app.reload import LIVE_CONFIG_KEYS
from postroom.app.root import App
from postroom.app.run import LISTEN_FILE, running_app, serve_forever
from postroom.app.seat import Seat
from postroom.app.workers import supervise, worker_count

__all__ = [
    "LISTEN_FILE",
    "LIVE_CONFIG_KEYS",
    "App",
    "Seat",
    "open_accounts",
    "running_app",
    "serve_forever",
    "supervise",
    "worker_count",
]
