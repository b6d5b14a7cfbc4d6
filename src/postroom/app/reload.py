"""SIGHUP: what a running App takes from the config file read again (LIVE_CONFIG_KEYS) and how each part is
told; the certificate, DKIM keys, [policy] list files and the log file are read again. Builds nothing new
beyond what a changed key needs; any other change is logged as waiting for a restart."""

from __future__ import annotations

import dataclasses
import ssl
from typing import TYPE_CHECKING

from postroom.auth.accounts import Accounts
from postroom.config.diff import ConfigChange, compare
from postroom.config.load import ConfigError
from postroom.policy.connect import ListFileError
from postroom.server.tls import ensure_certificate

if TYPE_CHECKING:
    from postroom.app.root import App

__all__ = ["LIVE_CONFIG_KEYS", "reload"]

# What a config reload (SIGHUP) applies to new sessions, checks and deliveries; any other change waits for a
# restart. [queue] and [delivery] keys apply to the next claim, deferral, connection or scheduler round.
LIVE_CONFIG_KEYS = (
    "smtp.relay_networks", "smtp.command_timeout", "smtp.data_timeout", "smtp.max_connections",
    "smtp.max_connections_per_ip", "smtp.max_message_size", "smtp.max_recipients", "smtp.max_errors",
    "smtp.long_lines", "smtp.bare_line_endings", "smtp.shutdown_grace", "tls", "local", "policy", "limits",
    "greylist", "sender_auth", "log.level",
    "queue.retry_schedule", "queue.max_lifetime", "queue.delay_warning", "queue.claim_lease",
    "delivery.poll_interval", "delivery.gather", "delivery.connect_timeout", "delivery.command_timeout",
    "delivery.max_received", "delivery.require_tls", "delivery.concurrency", "delivery.max_connections",
    "delivery.max_connections_per_domain",
)  # fmt: skip


def reload(app: App) -> bool:
    """SIGHUP: the config file (below), then the certificate files again (new TLS connections use them;
    open ones go on). On any error the old certificate stays in use and the error is logged. DKIM keys
    and the [policy] list files are read again, and the log file is opened again. True when the
    certificate was loaded again."""
    _reload_config(app)
    _reload_access_lists(app)
    app.dkim_signer.reload()
    try:
        app.log.reopen()  # logrotate moved the log file away: write to a new one by that name
    except OSError as exc:
        app.log.warning("log.reopen_failed", error=str(exc))
    if app.tls_context is None or app.certificate is None:
        return False
    try:
        app.tls_context.load_cert_chain(app.certificate.cert_file, app.certificate.key_file)
    except (OSError, ssl.SSLError) as exc:
        app.log.warning("server.reload_failed", error=str(exc))  # the old certificate stays
        return False
    app.log.info("server.reloaded", certificate=str(app.certificate.cert_file))
    return True


def _reload_access_lists(app: App) -> None:
    """SIGHUP: read [policy] allow_file and deny_file again; on an error the lists in use stay."""
    lists = app.access_lists
    if lists is None or not lists.files:
        return
    try:
        lists.reload()
    except ListFileError as exc:
        app.log.warning("policy.reload_failed", error=str(exc))
        return
    app.log.info("policy.reloaded", files=" ".join(str(path) for path in lists.files))


def _reload_config(app: App) -> None:
    """SIGHUP: read the config file again; what LIVE_CONFIG_KEYS name reaches the sessions made from now
    on (rates and connection caps: every session's next check) and the queue and delivery (their next
    step), the rest is logged as waiting for a restart. An invalid file is logged and the config in use
    stays."""
    if app.config_loader is None or not app.started:  # no file, or not started (or stopped)
        return
    old = app.config
    try:
        change = compare(old, app.config_loader(), live=LIVE_CONFIG_KEYS)
        app.config = change.config
        if app.listeners and any(key.startswith("policy.") for key in change.live):
            app.open_front_doors()  # reads the list files: on an error the old doors stay
    except ConfigError as exc:
        app.config = old
        # The operator's mistake, worded by ConfigError (the key and what is wrong): no traceback.
        app.log.error("config.reload_failed", error=str(exc))  # noqa: TRY400
        return
    _apply(app, change)
    app.log.info("config.reloaded", changed=",".join(change.live) or "none")
    if change.restart:
        app.log.warning("config.restart_needed", keys=",".join(change.restart))


def _apply(app: App, change: ConfigChange) -> None:
    """Tell each part of the keys that changed (``change.config`` holds only the live ones as new)."""
    config = change.config
    changed = {key.split(".")[0] for key in change.live}
    if "log.level" in change.live:
        app.log.set_level(config.log.level)
    if app.rate_limits is not None:
        app.rate_limits.update(
            settings=config.limits, greylist=config.greylist, relay_networks=config.smtp.relay_networks
        )
    if "queue" in changed:
        app.queue.update(config.queue)
    if "delivery" in changed:
        app.scheduler.update(config.delivery)
        app.remote.update(config.delivery)
    local = config.local
    for routing in app.routing:
        routing.set_local_domains(local.domains)
    if app.accounts_db is None:  # the delivery process: no listener to tell
        return
    if "tls" in changed:  # the certificate reload after this loads the new pair
        app.certificate = ensure_certificate(
            cert_file=config.tls.cert_file,
            key_file=config.tls.key_file,
            data_dir=config.data_dir,
            hostname=config.hostname,
        )
    accounts = Accounts(db=app.accounts_db, domains=local.domains, plus_separator=local.plus_separator)
    sender_auth = app.sender_auth() if "sender_auth" in changed else None
    for listener in app.listeners:
        services = listener.services.with_smtp(config.smtp)
        services.limits.update(
            max_total=config.smtp.max_connections, max_per_ip=config.smtp.max_connections_per_ip
        )
        if "local" in changed:
            services = dataclasses.replace(services, accounts=accounts)
        if "sender_auth" in changed and listener.name == "smtp":
            services = dataclasses.replace(services, sender_auth=sender_auth)
        listener.set_services(services)
