"""A private, throw-away Postfix instance on loopback for interop tests (the machine's own Postfix untouched).

It runs from its own config directory (``postfix -c DIR``), with its own queue, data folder and log file under
a world-traversable temporary folder (pytest's tmp_path is private to root, and Postfix's daemons run as
the ``postfix`` user), smtpd on 127.0.0.1 at a free port, virtual mailboxes as Maildir (owned by ``nobody``),
and no DNS: its SMTP client sends everything to ``relayhost`` (a postroom on loopback). It needs root and
the Debian ``postfix`` package (.ci/run installs it without configuring the default instance).

    with PostfixInstance(domain="pf.test", mailboxes=["carol"], relayhost=("127.0.0.1", port)) as pf:
        smtplib.SMTP(*pf.address) ...; pf.maildir_messages("carol")
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pytest

__all__ = ["PostfixInstance", "needs_postfix"]

_START_TIMEOUT = 20.0

needs_postfix = pytest.mark.skipif(
    shutil.which("postfix") is None or os.geteuid() != 0,
    reason="needs root and Postfix (.ci/run installs the postfix package with apt-get)",
)

# The services a relaying, Maildir-delivering Postfix needs; no chroot (no copies of /etc to make).
_MASTER = """\
{listen} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
local     unix  - n n - - local
virtual   unix  - n n - - virtual
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PostfixInstance:
    """Postfix with smtpd on 127.0.0.1:<free port>, mail for ``domain`` to Maildirs, the rest to relayhost."""

    def __init__(
        self,
        *,
        domain: str,
        mailboxes: Sequence[str],
        relayhost: tuple[str, int] | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="postroom-postfix-"))
        self.root.chmod(0o755)
        self.domain = domain
        self.address = ("127.0.0.1", _free_port("127.0.0.1"))
        self.config_dir = self.root / "conf"
        self.mail_dir = self.root / "mail"
        self.log_file = self.root / "postfix.log"
        self._mailboxes = mailboxes
        self._relayhost = relayhost
        self._tls = (cert_file, key_file) if cert_file and key_file else None  # read by smtpd as root
        self._extra = extra
        self._started = False

    def __enter__(self) -> PostfixInstance:
        self._write_config()
        self._postfix("start")
        self._started = True
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(self.address, timeout=1) as sock:
                    if sock.recv(512).startswith(b"220"):
                        return self
            except OSError:
                time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"Postfix did not answer on {self.address} in {_START_TIMEOUT} s: {self.log()}")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._started:
            self._started = False
            self._postfix("stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def maildir_messages(self, mailbox: str) -> list[Path]:
        new = self.mail_dir / self.domain / mailbox / "new"
        return sorted(new.iterdir()) if new.is_dir() else []

    def wait_for_log(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log:
                return log
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not in the Postfix log after {timeout} s:\n{self.log()}")

    def _postfix(self, command: str, *, check: bool = True) -> None:
        # Postfix reports to stderr only when it is a terminal; its log file says the rest.
        result = subprocess.run(
            ["postfix", "-c", str(self.config_dir), command],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"postfix {command} failed ({result.returncode}): {result.stderr}{self.log()}")

    def _write_config(self) -> None:
        nobody = pwd.getpwnam("nobody")
        postfix_uid = pwd.getpwnam("postfix").pw_uid
        for folder in ("conf", "queue", "data", "mail"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        os.chown(self.root / "data", postfix_uid, -1)
        os.chown(self.mail_dir, nobody.pw_uid, nobody.pw_gid)
        mailbox_map = ", ".join(f"{name}@{self.domain}={self.domain}/{name}/" for name in self._mailboxes)
        lines = [
            "compatibility_level = 3.6",
            f"queue_directory = {self.root / 'queue'}",
            f"data_directory = {self.root / 'data'}",
            f"maillog_file_prefixes = {self.root}",
            f"maillog_file = {self.log_file}",
            f"myhostname = mx.{self.domain}",
            f"mydomain = {self.domain}",
            f"myorigin = {self.domain}",
            "mydestination =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            "smtpd_peername_lookup = no",
            "smtp_dns_support_level = disabled",
            "smtp_host_lookup = native",
            "smtp_tls_security_level = may",
            "smtp_tls_loglevel = 1",
            "smtpd_tls_loglevel = 1",
            f"virtual_mailbox_domains = {self.domain}",
            f"virtual_mailbox_base = {self.mail_dir}",
            f"virtual_mailbox_maps = inline:{{ {mailbox_map} }}",
            f"virtual_uid_maps = static:{nobody.pw_uid}",
            f"virtual_gid_maps = static:{nobody.pw_gid}",
            "maximal_backoff_time = 2s",
            "minimal_backoff_time = 1s",
            "queue_run_delay = 1s",
        ]
        if self._relayhost is not None:
            lines.append(f"relayhost = [{self._relayhost[0]}]:{self._relayhost[1]}")
        if self._tls is not None:
            lines += [
                f"smtpd_tls_cert_file = {self._tls[0]}",
                f"smtpd_tls_key_file = {self._tls[1]}",
                "smtpd_tls_security_level = may",
            ]
        lines += list(self._extra)
        (self.config_dir / "main.cf").write_text("\n".join(lines) + "\n")
        listen = f"{self.address[0]}:{self.address[1]}"
        (self.config_dir / "master.cf").write_text(_MASTER.format(listen=listen))
