"""Acceptance benchmark: postroom beside Postfix, accepted and delivered messages per second, in one run.

Load comes from Postfix's smtp-source (lock-step SMTP, one recipient, several messages per connection).
For every cell (message size x concurrent sessions) each server gets the same N messages, and we measure
  accepted/s  N / seconds from the first connection until smtp-source had its last 250 reply;
  e2e/s       N / seconds from the first connection until the recipient's Maildir holds all N files;
  CPU/msg     CPU of the server's whole process tree during that end-to-end window, divided by N.
Then the memory per idle connection (1,000 connections after EHLO), measured by the harness's
peer_bench.py --idle. Servers take turns cell by cell, so noise on the machine hits both alike.

postroom is started here (fresh data folder, a config written here, log level warning); Postfix is the
harness's reference (setup_postfix.sh: 127.0.0.1:2626, virtual Maildir), set up if it is missing.
Loopback only. This does not edit either server's code; it runs them.

  benchmarks/accept.py --quick               2,000 messages per cell, one run (under 3 minutes)
  benchmarks/accept.py [--json FILE]         10,000 messages per cell, median of 3 runs
  benchmarks/accept.py --help                everything else (--set delivery.concurrency=16, --strict, ...)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
SIZES = (1024, 102_400)
SESSIONS = (10, 100)
DOMAIN = "example.test"
RCPT = f"user1@{DOMAIN}"
SENDER = "bench@bench.test"
POSTFIX = ("127.0.0.1", 2626)
POLL = 0.02  # seconds between looks at a Maildir or at smtp-source
POSTFIX_IDLE_PSS_KIB = 1.16 * 1024  # the harness README's reference figure


# ------------------------------------------------------------------ what to run
@dataclass(frozen=True)
class Plan:
    """How much to send and how long anything may take."""

    messages: int
    reps: int
    idle: int
    budget: float  # seconds for the whole matrix; runs are cut short rather than overrun it
    accept_timeout: float
    deliver_timeout: float
    settle_max: float
    per_connection: bool  # one message per connection instead of many (smtp-source without -d)


@dataclass(frozen=True)
class Target:
    """One server under test: where it listens, its process tree, and the Maildir it delivers into."""

    name: str
    host: str
    port: int
    pid: int | None
    maildir: Path  # the recipient mailbox (holds new/ cur/ tmp/)


@dataclass
class Run:
    """One server, one cell, one repetition."""

    sent: int
    accepted: int = 0
    delivered: int = 0
    accept_s: float | None = None
    e2e_s: float | None = None
    cpu_s: float | None = None
    error: str = ""
    rates: dict[str, float | None] = field(default_factory=dict)

    def finish(self) -> Run:
        n = self.accepted
        self.rates = {
            "accepted_per_s": n / self.accept_s if self.accept_s and n else None,
            "e2e_per_s": n / self.e2e_s if self.e2e_s and n else None,
            "cpu_ms_per_msg": 1000 * self.cpu_s / n if self.cpu_s is not None and n else None,
        }
        return self


# ------------------------------------------------------------------ /proc
def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, CPU ticks of the process and of its reaped children)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        table[int(entry)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
    return table


def _tree(root: int, table: dict[int, tuple[int, int]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def tree_cpu(root: int | None) -> float | None:
    """CPU seconds used so far by root and every descendant (live or reaped)."""
    if root is None:
        return None
    table = _proc_table()
    return sum(table[pid][1] for pid in _tree(root, table)) / CLK_TCK


def tree_size(root: int) -> int:
    return len(_tree(root, _proc_table()))


def settle(pids: list[int | None], max_s: float, threshold: float = 0.1) -> None:
    """Wait (at most max_s) until the servers' trees use under `threshold` of a core: backlogs done."""
    end = time.monotonic() + max_s
    while time.monotonic() < end:
        before = sum(tree_cpu(p) or 0.0 for p in pids)
        time.sleep(0.3)
        if (sum(tree_cpu(p) or 0.0 for p in pids) - before) / 0.3 < threshold:
            return


# ------------------------------------------------------------------ Maildir
def count_new(mailbox: Path) -> int:
    try:
        with os.scandir(mailbox / "new") as entries:
            return sum(1 for e in entries if not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def empty_mailbox(mailbox: Path) -> None:
    for sub in ("new", "cur", "tmp"):
        with contextlib.suppress(FileNotFoundError), os.scandir(mailbox / sub) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


ASIDE = ".bench-aside"  # beside the mailbox: delivered mail moved out of the way until the run ends


def set_aside(mailbox: Path) -> None:
    """Empties the mailbox for the next cell without freeing an inode: each non-empty folder is renamed into
    ``ASIDE`` and made again (same owner and mode); ``remove_aside`` deletes them all after the last cell.

    Why not unlink: on an ext4 without a journal (this project's build machines) a new inode is never one
    freed in the last 1-6 minutes (the kernel's recently_deleted()), so after deleting 10,000 files every file
    created near them cost up to 0.9 ms of kernel CPU: the harness's own clean-up slowed whichever server
    ran next (docs/performance.md). Renaming frees nothing.
    """
    aside = mailbox.parent / ASIDE
    for sub in ("new", "cur", "tmp"):
        folder = mailbox / sub
        try:
            with os.scandir(folder) as entries:
                if next(entries, None) is None:
                    continue
            status = folder.stat()
        except FileNotFoundError:
            continue
        aside.mkdir(mode=0o700, exist_ok=True)
        folder.rename(aside / f"{mailbox.name}-{sub}-{time.monotonic_ns()}")
        folder.mkdir(mode=0o700)
        os.chown(folder, status.st_uid, status.st_gid)
        os.chmod(folder, status.st_mode & 0o7777)


def remove_aside(mailboxes: list[Path]) -> None:
    for mailbox in mailboxes:
        shutil.rmtree(mailbox.parent / ASIDE, ignore_errors=True)


# ------------------------------------------------------------------ Postfix (the harness's reference)
def harness_dir() -> Path:
    sibling = Path(__file__).resolve().parents[2] / "shared" / "bench"
    return sibling if sibling.is_dir() else Path("/work/shared/bench")


def sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def postconf(key: str) -> str:
    out = subprocess.run(
        [sbin("postconf"), "-h", key], capture_output=True, text=True, timeout=30, check=True
    )
    return out.stdout.strip()


def listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def ensure_postfix(harness: Path) -> None:
    """Run setup_postfix.sh unless Postfix is installed, configured for example.test and listening."""
    ready = Path(sbin("postconf")).exists() and listening(*POSTFIX)
    if ready and DOMAIN in postconf("virtual_mailbox_domains"):
        return
    print("# setting up the reference Postfix (setup_postfix.sh)", file=sys.stderr)
    subprocess.run(["bash", str(harness / "setup_postfix.sh")], check=True, timeout=900)
    if not listening(*POSTFIX):
        raise SystemExit(f"Postfix does not listen on {POSTFIX[0]}:{POSTFIX[1]} after setup_postfix.sh")


def postfix_target() -> Target:
    pid_file = Path(postconf("queue_directory")) / "pid" / "master.pid"
    pid = int(pid_file.read_text().strip())
    maps = postconf("virtual_mailbox_maps")
    out = subprocess.run(
        [sbin("postmap"), "-q", RCPT, maps], check=False, capture_output=True, text=True, timeout=30
    )
    relative = out.stdout.strip()
    if not relative.endswith("/"):
        raise SystemExit(f"Postfix does not deliver {RCPT} to a Maildir (virtual_mailbox_maps: {relative!r})")
    maildir = Path(postconf("virtual_mailbox_base")) / relative
    return Target("Postfix", *POSTFIX, pid=pid, maildir=maildir)


def drain_postfix(target: Target, timeout: float = 20.0) -> None:
    """Reload Postfix so that the smtpd processes the matrix left idle exit (they linger max_idle = 100 s);
    otherwise they serve the idle test's connections, and memory they already held hides the cost of one."""
    assert target.pid is not None
    subprocess.run([sbin("postfix"), "reload"], check=False, capture_output=True, timeout=60)
    end = time.monotonic() + timeout
    while time.monotonic() < end and tree_size(target.pid) > 10:
        time.sleep(0.5)


def postfix_version() -> str:
    return postconf("mail_version")


# ------------------------------------------------------------------ postroom (started here)
def postroom_command(override: str | None) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if override:
        return shlex.split(override), env
    script = ROOT / ".venv" / "bin" / "postroom"
    if script.exists():
        return [str(script)], env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return [str(ROOT / ".venv" / "bin" / "python"), "-m", "postroom.cli.main"], env


def postroom_config(data_dir: Path, overrides: list[str]) -> str:
    """The benchmark's config: defaults, except quiet logs, room for 2,000 connections and any number of
    messages in one, nothing else bound."""
    sections: dict[str, dict[str, str]] = {
        "": {"hostname": '"bench.postroom.test"', "data_dir": json.dumps(str(data_dir))},
        "smtp": {"listen": '["127.0.0.1:0"]', "max_connections": "2000", "max_connections_per_ip": "2000"},
        "submission": {"listen": "[]"},
        "submissions": {"listen": "[]"},
        "admin": {"listen": "[]"},
        "local": {"domains": json.dumps([DOMAIN])},
        "log": {"level": '"warning"'},
        # Like the reference Postfix: no SPF/DKIM/DMARC milter (and no DNS beyond loopback from a benchmark).
        "sender_auth": {"enabled": "false"},
        # Postfix's smtpd has no cap on messages per connection; ours (Exim's 1,000) would end the full
        # run's sessions (10,000 messages over 10 connections) with 421 before smtp-source is done.
        "limits": {"messages_per_connection": "0"},
    }
    for item in overrides:
        key, _, value = item.partition("=")
        section, _, name = key.rpartition(".")
        sections.setdefault(section, {})[name] = value
    lines = [f"{k} = {v}" for k, v in sections.pop("").items()]
    for section, values in sections.items():
        lines += ["", f"[{section}]", *(f"{k} = {v}" for k, v in values.items())]
    return "\n".join(lines) + "\n"


class Postroom:
    """A postroom server in a fresh temporary data folder, for the length of a `with` block."""

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        workdir: Path,
        overrides: list[str],
        *,
        mailbox: str | None = RCPT,
    ) -> None:
        self.command, self.env, self.workdir, self.mailbox = command, env, workdir, mailbox
        self.config = workdir / "postroom.toml"
        self.config.write_text(postroom_config(workdir / "data", overrides))
        self.process: subprocess.Popen[bytes] | None = None
        self.address: tuple[str, int] | None = None

    def __enter__(self) -> Postroom:
        if self.mailbox is not None:
            self._cli("user", "add", self.mailbox)
        out, err = (self.workdir / "serve.out").open("wb"), (self.workdir / "serve.err").open("wb")
        with out, err:
            self.process = subprocess.Popen(
                [*self.command, "-c", str(self.config), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                start_new_session=True,
            )
        self.address = self._wait_ready(timeout=60)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None and self.process is not None:
            print(f"# postroom's log (stderr), last lines:\n{self.log_tail()}", file=sys.stderr)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def target(self) -> Target:
        assert self.process is not None
        assert self.address is not None
        mailbox = self.workdir / "data" / "mailboxes" / DOMAIN / RCPT.partition("@")[0]
        return Target("postroom", *self.address, pid=self.process.pid, maildir=mailbox)

    def log_tail(self, chars: int = 1500) -> str:
        return (self.workdir / "serve.err").read_text(errors="replace")[-chars:]

    def _cli(self, *args: str) -> None:
        done = subprocess.run(
            [*self.command, "-c", str(self.config), *args],
            check=False,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        if done.returncode != 0:
            raise SystemExit(f"postroom {' '.join(args)} failed: {done.stderr.strip()[-800:]}")

    def _wait_ready(self, timeout: float) -> tuple[str, int]:
        assert self.process is not None
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in (self.workdir / "serve.out").read_text(errors="replace").splitlines():
                if line.strip().startswith("SMTP (MX)"):
                    host, _, port = line.split()[-1].rpartition(":")
                    return host.strip("[]"), int(port)
            if self.process.poll() is not None:
                raise SystemExit(f"postroom serve exited ({self.process.returncode}):\n{self.log_tail()}")
            time.sleep(0.1)
        raise SystemExit(f"postroom did not announce its SMTP listener within {timeout:.0f} s")


# ------------------------------------------------------------------ one run
Cell = tuple[int, int]  # (message size in bytes, concurrent sessions)


def smtp_source_command(
    target: Target, size: int, sessions: int, count: int, per_connection: bool
) -> list[str]:
    command = [sbin("smtp-source"), "-c", "-s", str(sessions), "-m", str(count), "-l", str(size)]
    if not per_connection:
        command.append("-d")  # keep each session's connection for many messages
    return [*command, "-M", "bench.test", "-f", SENDER, "-t", RCPT, f"{target.host}:{target.port}"]


def last_counter(output: bytes) -> int:
    """smtp-source -c prints a running count of accepted messages separated by carriage returns."""
    tail = output[-64:].replace(b"\r", b"\n").split()
    return int(tail[-1]) if tail and tail[-1].isdigit() else 0


def wait_exit(process: subprocess.Popen[bytes], start: float, timeout: float) -> float | None:
    """Seconds from start until the process ended, or None if it had to be killed at the timeout."""
    try:
        process.wait(timeout=max(timeout, 0.1))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        return None
    return time.monotonic() - start


def wait_delivered(mailbox: Path, expected: int, start: float, timeout: float) -> tuple[int, float | None]:
    """(files in new/, seconds from start until there were `expected`, or None at the timeout)."""
    end = time.monotonic() + max(timeout, 0.0)
    while True:
        found = count_new(mailbox)
        if found >= expected:
            return found, time.monotonic() - start
        if time.monotonic() >= end:
            return found, None
        time.sleep(POLL)


def run_once(target: Target, cell: Cell, count: int, plan: Plan, left: float) -> Run:
    """Send `count` messages with smtp-source; time the last 250 and the last file in the Maildir."""
    set_aside(target.maildir)
    run = Run(sent=count)
    command = smtp_source_command(target, *cell, count, plan.per_connection)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        cpu0, start = tree_cpu(target.pid), time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=err, start_new_session=True)
        run.accept_s = wait_exit(process, start, min(plan.accept_timeout, left))
        out.seek(0)
        err.seek(0)
        run.accepted = last_counter(out.read())
        if process.returncode != 0:
            run.error = (
                err.read().decode(errors="replace").strip()[-300:] or f"smtp-source: {process.returncode}"
            )
        if run.accepted:
            timeout = min(plan.deliver_timeout, left - (time.monotonic() - start))
            run.delivered, run.e2e_s = wait_delivered(target.maildir, run.accepted, start, timeout)
        cpu1 = tree_cpu(target.pid)
    if cpu0 is not None and cpu1 is not None:
        run.cpu_s = cpu1 - cpu0
    if run.accepted and run.e2e_s is None:
        run.error = run.error or f"only {run.delivered} of {run.accepted} delivered in time"
    return run.finish()


# ------------------------------------------------------------------ the matrix
def cell_label(cell: Cell) -> str:
    return f"{cell[0] // 1024} KiB x {cell[1]}"


def run_matrix(targets: list[Target], plan: Plan) -> dict[Cell, dict[str, list[Run]]]:
    """Every cell, every repetition, servers taking turns; stops early when the time budget is spent."""
    results: dict[Cell, dict[str, list[Run]]] = {}
    end = time.monotonic() + plan.budget
    pids = [t.pid for t in targets]
    for rep in range(plan.reps):
        for cell in [(size, sessions) for size in SIZES for sessions in SESSIONS]:
            for target in targets:
                settle(pids, plan.settle_max)
                left = end - time.monotonic()
                if left < 5:
                    print("# time budget spent: stopping the matrix early", file=sys.stderr)
                    return results
                run = run_once(target, cell, plan.messages, plan, left)
                results.setdefault(cell, {}).setdefault(target.name, []).append(run)
                progress(rep, cell, target, run)
    return results


def warm_up(targets: list[Target], plan: Plan) -> None:
    """A few hundred small messages each, unmeasured: processes spawned, code paths warm, files created."""
    for target in targets:
        run = run_once(target, (SIZES[0], max(SESSIONS)), 300, plan, left=60)
        if run.error:
            raise SystemExit(f"warm-up against {target.name} failed: {run.error}")
        set_aside(target.maildir)


def progress(rep: int, cell: Cell, target: Target, run: Run) -> None:
    accepted, e2e, cpu = (run.rates[k] for k in ("accepted_per_s", "e2e_per_s", "cpu_ms_per_msg"))
    counts = f"sent/accepted/delivered {run.sent}/{run.accepted}/{run.delivered}"
    print(
        f"rep{rep + 1} {cell_label(cell):<13} {target.name:<9} accepted {fmt(accepted):>7}/s  "
        f"e2e {fmt(e2e):>7}/s  CPU {fmt(cpu, 2):>6} ms/msg  {counts}"
        + (f"  ERROR {run.error[:160]}" if run.error else ""),
        file=sys.stderr,
        flush=True,
    )


def summarize(results: dict[Cell, dict[str, list[Run]]]) -> dict[Cell, dict[str, dict[str, float | None]]]:
    return {cell: {name: medians(runs) for name, runs in per.items()} for cell, per in results.items()}


def medians(runs: list[Run]) -> dict[str, float | None]:
    keys = ("accepted_per_s", "e2e_per_s", "cpu_ms_per_msg")
    values = {k: [rate for r in runs if (rate := r.rates.get(k)) is not None] for k in keys}
    return {k: statistics.median(v) if v else None for k, v in values.items()}


# ------------------------------------------------------------------ idle connections (peer_bench.py --idle)
def measure_idle(harness: Path, targets: list[Target], count: int) -> dict[str, Any]:
    """Memory per idle connection after EHLO, as the harness measures it (RSS and PSS of the tree)."""
    with tempfile.TemporaryDirectory(prefix="accept-idle-") as tmp:
        report = Path(tmp) / "idle.json"
        specs = [f"{t.name.lower()}={t.host}:{t.port},pid={t.pid}" for t in targets]
        command = [sys.executable, str(harness / "peer_bench.py"), "--no-matrix", "--idle", str(count)]
        done = subprocess.run(
            [*command, "--json", str(report), *specs],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0 or not report.exists():
            return {"error": done.stderr.strip()[-500:]}
        return dict(json.loads(report.read_text()).get("idle", {}))


# ------------------------------------------------------------------ report
def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return ours / theirs if ours is not None and theirs else None


def table(summary: dict[Cell, dict[str, dict[str, float | None]]]) -> list[str]:
    lines = [
        "| cell (size x sessions) | Postfix accepted/s | postroom accepted/s | ratio "
        "| Postfix e2e/s | postroom e2e/s | ratio | Postfix CPU ms/msg | postroom CPU ms/msg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell, per in summary.items():
        pf, pr = per.get("Postfix", {}), per.get("postroom", {})
        acc = (pf.get("accepted_per_s"), pr.get("accepted_per_s"))
        e2e = (pf.get("e2e_per_s"), pr.get("e2e_per_s"))
        lines.append(
            f"| {cell_label(cell)} | {fmt(acc[0])} | {fmt(acc[1])} | {fmt(ratio(acc[1], acc[0]), 2)} "
            f"| {fmt(e2e[0])} | {fmt(e2e[1])} | {fmt(ratio(e2e[1], e2e[0]), 2)} "
            f"| {fmt(pf.get('cpu_ms_per_msg'), 2)} | {fmt(pr.get('cpu_ms_per_msg'), 2)} |"
        )
    return lines


def verdicts(summary: dict[Cell, dict[str, dict[str, float | None]]]) -> list[dict[str, Any]]:
    """The issue's targets: 2x accepted at 1 KiB/100, 1.5x e2e at 100 KiB, never below Postfix."""
    checks = []

    def check(name: str, cell: Cell, metric: str, wanted: float) -> None:
        per = summary.get(cell, {})
        got = ratio(per.get("postroom", {}).get(metric), per.get("Postfix", {}).get(metric))
        checks.append(
            {"target": name, "ratio": got, "wanted": wanted, "met": got is not None and got >= wanted}
        )

    check("1 KiB x 100: accepted >= 2x Postfix", (SIZES[0], 100), "accepted_per_s", 2.0)
    for sessions in SESSIONS:
        check(f"100 KiB x {sessions}: e2e >= 1.5x Postfix", (SIZES[1], sessions), "e2e_per_s", 1.5)
    for cell in summary:
        for metric, word in (("accepted_per_s", "accepted"), ("e2e_per_s", "e2e")):
            check(f"{cell_label(cell)}: {word} >= Postfix", cell, metric, 1.0)
    return checks


def idle_lines(idle: dict[str, Any], count: int) -> list[str]:
    if "error" in idle:
        return [f"idle-connection test failed: {idle['error']}"]
    lines = [
        f"Memory per idle connection ({count} connections after EHLO; sums over the process tree):",
        "",
        "| server | connections | RSS KiB/conn | PSS KiB/conn | MemAvailable drop KiB/conn | processes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in idle.items():
        cells = [r.get(k, "-") for k in ("conns", "rss_kib_per_conn", "pss_kib_per_conn")]
        cells += [
            r.get("memavail_delta_kib_per_conn", "-"),
            f"{r.get('procs_before')} -> {r.get('procs_after')}",
        ]
        lines.append(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")
    lines.append(
        f"(Postfix runs a process per connection, so its RSS counts shared pages again for each; PSS is the "
        f"fair figure; the harness's reference is about {POSTFIX_IDLE_PSS_KIB:,.0f} KiB.)"
    )
    return lines


def report(meta: dict[str, Any], summary: dict[Cell, Any], checks: list[dict[str, Any]], idle: Any) -> None:
    print(
        f"\n## accept: messages/s, median of {meta['reps']} run(s) of {meta['messages']:,} messages per cell "
        f"(smtp-source, lock-step, {'1' if meta['per_connection'] else 'many'} per connection, 1 recipient)"
    )
    print(
        f"machine: {meta['cpus']} CPU(s), {meta['cpu']}; "
        f"Postfix {meta['postfix']}; postroom {meta['postroom']}\n"
    )
    print("\n".join(table(summary)))
    print("\ne2e = accepted AND in the Maildir, timed from the first connection; CPU = the server's whole")
    print("process tree during that window (Postfix: master and its children; postroom: its process tree).\n")
    for c in checks:
        print(f"  [{'met ' if c['met'] else 'MISS'}] {c['target']} (ratio {fmt(c['ratio'], 2)})")
    if idle is not None:
        print("\n" + "\n".join(idle_lines(idle, meta["idle"])))


# ------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="2,000 messages per cell, 1 run, under 3 minutes"
    )
    parser.add_argument("--messages", type=int, help="messages per cell and run (quick 2,000; full 10,000)")
    parser.add_argument("--reps", type=int, help="runs per cell; the table shows medians (quick 1; full 3)")
    parser.add_argument(
        "--idle", type=int, help="idle connections for the memory test, 0 skips (default 1000)"
    )
    parser.add_argument("--per-connection", action="store_true", help="one message per connection")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=TOML",
        help="extra postroom config, e.g. --set queue.inline_max=0 (repeatable)",
    )
    parser.add_argument("--postroom-cmd", help="command that runs postroom (default: the project's .venv)")
    parser.add_argument("--json", type=Path, help="write every run and the medians here")
    parser.add_argument("--keep", action="store_true", help="keep postroom's temporary data folder")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    return Plan(
        messages=args.messages or (2_000 if quick else 10_000),
        reps=args.reps or (1 if quick else 3),
        idle=1000 if args.idle is None else args.idle,
        budget=110.0 if quick else 2400.0,
        accept_timeout=40.0 if quick else 180.0,
        deliver_timeout=40.0 if quick else 180.0,
        settle_max=5.0 if quick else 15.0,
        per_connection=args.per_connection,
    )


def raise_fd_limit() -> None:
    """1,000 idle connections need more than the usual 1,024 descriptors (inherited by postroom)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65_536)), hard))


def machine(plan: Plan, command: list[str], env: dict[str, str]) -> dict[str, Any]:
    version = subprocess.run(
        [*command, "--version"], check=False, capture_output=True, text=True, env=env, timeout=60
    )
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "?",
    )
    return {
        **asdict(plan),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "kernel": os.uname().release,
        "postfix": postfix_version(),
        "postroom": version.stdout.strip() or version.stderr.strip()[-80:],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="postroom-accept-"))
    try:
        yield path
    finally:
        if keep:
            print(f"# kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(143))  # so `with` blocks stop postroom
    harness = harness_dir()
    ensure_postfix(harness)
    raise_fd_limit()
    command, env = postroom_command(args.postroom_cmd)
    meta = machine(plan, command, env)
    with workdir(args.keep) as tmp, Postroom(command, env, tmp, args.overrides) as server:
        targets = [postfix_target(), server.target()]
        try:
            warm_up(targets, plan)
            results = run_matrix(targets, plan)
            idle = None
            if plan.idle:
                drain_postfix(targets[0])
                idle = measure_idle(harness, targets, plan.idle)
        finally:
            remove_aside([target.maildir for target in targets])
            for target in targets:  # as the run found them: empty
                empty_mailbox(target.maildir)
        if server.process is not None and server.process.poll() is not None:
            print(f"# postroom exited during the run:\n{server.log_tail()}", file=sys.stderr)
    summary = summarize(results)
    checks = verdicts(summary)
    report(meta, summary, checks, idle)
    if args.json:
        args.json.write_text(json.dumps(document(meta, results, idle), indent=1) + "\n")
    return 1 if args.strict and not all(c["met"] for c in checks) else 0


def document(meta: dict[str, Any], results: dict[Cell, dict[str, list[Run]]], idle: Any) -> dict[str, Any]:
    """Everything measured, for --json: every run, the medians, the targets and the idle test."""
    summary = summarize(results)
    cells = {
        cell_label(cell): {
            name: {"median": summary[cell][name], "runs": [asdict(r) for r in runs]}
            for name, runs in per.items()
        }
        for cell, per in results.items()
    }
    return {"meta": meta, "cells": cells, "targets": verdicts(summary), "idle": idle}


if __name__ == "__main__":
    sys.exit(main())
