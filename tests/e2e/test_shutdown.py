"""SIGTERM: stop accepting, let a transaction under way finish, tell idle sessions 421, exit 0."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.e2e.conftest import add_accounts
from tests.helpers.server import maildir_messages, serve_process, wait_for, write_config
from tests.helpers.transcript import Transcript


def test_sigterm_lets_the_open_transaction_finish(tmp_path: Path) -> None:
    config, config_file = write_config(tmp_path, smtp={"shutdown_grace": 10})
    add_accounts(config)
    with serve_process(config_file) as served:
        idle = Transcript(served.address)
        idle.expect("220 *")
        busy = Transcript(served.address)
        busy.expect("220 *")
        busy.send("EHLO c")
        busy.expect("250 *")
        busy.send("MAIL FROM:<s@example.test>")
        busy.expect("250 *")
        busy.send("RCPT TO:<alice@postroom.test>")
        busy.expect("250 *")
        busy.send("DATA")
        busy.expect("354 *")
        busy.send_raw(b"Subject: in flight\r\n\r\npart one\r\n")
        served.process.send_signal(signal.SIGTERM)
        idle.expect("421 4.3.2 *")
        idle.expect_closed()
        time.sleep(0.3)
        busy.send_raw(b"part two\r\n.\r\n")
        busy.expect("250 2.0.0 Ok: queued as *")
        busy.expect("421 4.3.2 *")
        busy.expect_closed()
        assert served.process.wait(30) == 0
        idle.close()
        busy.close()
    with serve_process(config_file) as again:
        (path,) = wait_for(
            lambda: maildir_messages(config, "alice@postroom.test"), what="delivery after restart"
        )
        assert path.read_bytes().endswith(b"part one\npart two\n")
        assert again.terminate() == 0
