"""Relay benchmark: postroom A -> postroom B beside Postfix A -> Postfix B, in one run on one machine.

smtp-source hands N messages of 4 KiB (one recipient each, at example.test) to server A from several sessions;
A accepts them for relaying (127.0.0.0/8 may relay) and carries them over SMTP to server B, which keeps
example.test in a Maildir. We measure, for each pair:
  accepted/s   N / seconds from the first connection to A until smtp-source had its last 250 reply;
  relayed/s    N / seconds from the first connection to A until B's Maildir holds all N files;
  CPU/msg      CPU of both servers' process trees during that window, divided by N.
postroom A finds B as example.test's MX through a loopback DNS server (tests/helpers/dns.py) on B's port;
Postfix A sends to Postfix B as its relayhost (no DNS). Both Postfixes are private instances
(tests/helpers/postfix.py: their own config, queue and log in a temporary folder; the machine's Postfix is
left alone), with default durability. Pairs take turns run by run. Loopback only; needs root and Postfix.

  benchmarks/relay.py --quick      2,000 messages, one run
  benchmarks/relay.py              10,000 messages, median of 3 runs
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from accept import (  # noqa: E402  (a sibling script, not a package)
    DOMAIN,
    RCPT,
    Postroom,
    empty_mailbox,
    last_counter,
    postroom_command,
    raise_fd_limit,
    sbin,
    settle,
    tree_cpu,
    wait_delivered,
    wait_exit,
)
from tests.helpers.dns import DnsServer  # noqa: E402
from tests.helpers.postfix import PostfixInstance  # noqa: E402

SIZE = 4096
SESSIONS = 20


@dataclass(frozen=True)
class Pair:
    """A relaying server A (where smtp-source sends) and the server B whose Maildir receives."""

    name: str
    address: tuple[str, int]
    pids: tuple[int, int]
    maildir: Path


@dataclass
class Result:
    accepted: int = 0
    accept_s: float | None = None
    relay_s: float | None = None
    cpu_s: float | None = None
    error: str = ""

    def rate(self, seconds: float | None) -> float | None:
        return self.accepted / seconds if seconds and self.accepted else None

    def cpu_ms(self) -> float | None:
        return 1000 * self.cpu_s / self.accepted if self.cpu_s and self.accepted else None


@contextmanager
def postroom_pair(workdir: Path, dns: DnsServer) -> Iterator[Pair]:
    command, env = postroom_command(None)
    (workdir / "b").mkdir()
    (workdir / "a").mkdir()
    with Postroom(command, env, workdir / "b", []) as b:
        assert b.address is not None
        assert b.process is not None
        # TTLs as in the wild (an hour; 5 minutes for "no MTA-STS record"), so answers are cached
        dns.add(DOMAIN, "MX", "10 mx.b.test.", ttl=3600).add("mx.b.test", "A", "127.0.0.1", ttl=3600)
        overrides = [
            'local.domains=["a.test"]',
            'smtp.relay_networks=["127.0.0.0/8"]',
            f'dns.nameservers=["{dns.address}"]',
            f"delivery.smtp_port={b.address[1]}",
        ]
        with Postroom(command, env, workdir / "a", overrides, mailbox=None) as a:
            assert a.address is not None
            assert a.process is not None
            yield Pair("postroom", a.address, (a.process.pid, b.process.pid), b.target().maildir)


def _master_pid(instance: PostfixInstance) -> int:
    return int((instance.root / "queue" / "pid" / "master.pid").read_text().strip())


@contextmanager
def postfix_pair() -> Iterator[Pair]:
    with PostfixInstance(domain=DOMAIN, mailboxes=[RCPT.partition("@")[0]]) as b, PostfixInstance(
        domain="a.test", mailboxes=["postmaster"], relayhost=b.address
    ) as a:
        mailbox = b.mail_dir / DOMAIN / RCPT.partition("@")[0]
        yield Pair("Postfix", a.address, (_master_pid(a), _master_pid(b)), mailbox)


def run_once(pair: Pair, count: int, timeout: float) -> Result:
    empty_mailbox(pair.maildir)
    result = Result()
    host, port = pair.address
    command = [
        sbin("smtp-source"), "-c", "-d", "-s", str(SESSIONS), "-m", str(count), "-l", str(SIZE),
        "-M", "bench.test", "-f", "bench@bench.test", "-t", RCPT, f"{host}:{port}",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        cpu0, start = sum(tree_cpu(p) or 0.0 for p in pair.pids), time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True)
        result.accept_s = wait_exit(process, start, timeout)
        out.seek(0)
        err.seek(0)
        result.accepted = last_counter(out.read())
        if process.returncode != 0:
            result.error = err.read().decode(errors="replace").strip()[-300:] or "smtp-source failed"
        if result.accepted:
            left = timeout - (time.monotonic() - start)
            delivered, result.relay_s = wait_delivered(pair.maildir, result.accepted, start, left)
            if result.relay_s is None:
                result.error = result.error or f"only {delivered} of {result.accepted} relayed in time"
        result.cpu_s = sum(tree_cpu(p) or 0.0 for p in pair.pids) - cpu0
    return result


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 messages, one run")
    parser.add_argument("--messages", type=int, help="messages per run (quick 2,000; full 10,000)")
    parser.add_argument("--reps", type=int, help="runs per pair (quick 1; full 3)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one run may take")
    args = parser.parse_args(argv)
    count = args.messages or (2000 if args.quick else 10_000)
    reps = args.reps or (1 if args.quick else 3)
    raise_fd_limit()
    results: dict[str, list[Result]] = {"postroom": [], "Postfix": []}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="postroom-relay-")))
        dns = stack.enter_context(DnsServer(negative_ttl=300))
        pairs = [stack.enter_context(postroom_pair(workdir, dns)), stack.enter_context(postfix_pair())]
        for pair in pairs:  # warm up: one small run each, not counted
            run_once(pair, 50, args.timeout)
        for rep in range(reps):
            for pair in pairs:
                settle([*pair.pids], max_s=20)
                result = run_once(pair, count, args.timeout)
                results[pair.name].append(result)
                took, relayed = _fmt(result.accept_s, 2), _fmt(result.relay_s, 2)
                print(
                    f"# run {rep + 1} {pair.name}: accepted {result.accepted} in {took} s,"
                    f" relayed in {relayed} s {result.error}",
                    file=sys.stderr,
                )
    summary = {
        name: {
            "accepted/s": _median([r.rate(r.accept_s) for r in runs]),
            "relayed/s": _median([r.rate(r.relay_s) for r in runs]),
            "CPU ms/msg": _median([r.cpu_ms() for r in runs]),
        }
        for name, runs in results.items()
    }
    print(f"relay A -> B, {count:,} messages of {SIZE // 1024} KiB, {SESSIONS} sessions, median of {reps}")
    print(f"{'':14}{'postroom':>12}{'Postfix':>12}{'ratio':>9}")
    for metric in ("accepted/s", "relayed/s", "CPU ms/msg"):
        ours, theirs = summary["postroom"][metric], summary["Postfix"][metric]
        ratio = ours / theirs if ours and theirs else None
        digits = 2 if metric.startswith("CPU") else 0
        print(f"{metric:14}{_fmt(ours, digits):>12}{_fmt(theirs, digits):>12}{_fmt(ratio, 2):>8}x")
    return 0 if all(r.relay_s is not None for runs in results.values() for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
