"""The admin HTTP listener against a real postroom: /metrics without a password, the API behind one (HTTP
Basic for scripts, a login cookie plus CSRF token for browsers), retry and delete from the API."""

from __future__ import annotations

import base64
import http.cookiejar
import json
import re
import smtplib
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from postroom.config import Config
from tests.admin.conftest import ADMIN_PASSWORD, base_url
from tests.helpers.dns import DnsServer
from tests.helpers.server import ServerThread, make_config, server_thread, wait_for

BASIC = "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", *args],
        capture_output=True, text=True, timeout=30, check=True,
    )


def curl_status(result: subprocess.CompletedProcess[str]) -> tuple[int, str]:
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text exposition (None when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        sample_name, _, label_text = sample.partition("{")
        if sample_name != name:
            continue
        found = ",".join(sorted(part for part in label_text.rstrip("}").split(",") if part))
        if found == wanted:
            return float(value)
    return None


def get_json(url: str, **headers: str) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=20) as response:
        return json.load(response)


def http_error(call: Any) -> urllib.error.HTTPError:
    """The HTTPError ``call()`` raises, its connection closed."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        call()
    refused.value.close()
    return refused.value


def send(server: ServerThread, recipient: str) -> str:
    with smtplib.SMTP(*server.address, timeout=20) as client:
        client.ehlo("client.test")
        _, reply = client.docmd("MAIL", "FROM:<sender@client.test>")
        client.rcpt(recipient)
        code, reply = client.data(b"Subject: hello\r\n\r\nHello.\r\n")
        assert code == 250
    return reply.decode().rsplit(" ", 1)[-1]


def test_metrics_are_readable_without_a_password_and_count_a_delivery(admin_server: ServerThread) -> None:
    url = base_url(admin_server) + "/metrics"
    send(admin_server, "postmaster@postroom.test")

    def delivered() -> str | None:
        status, text = curl_status(curl(url))
        assert status == 200
        count = metric(text, "postroom_deliveries_total", result="delivered", destination="local")
        return text if count == 1.0 else None

    text = wait_for(delivered, what="the delivery in /metrics")
    assert metric(text, "postroom_messages_received_total") == 1.0
    assert metric(text, "postroom_recipients_accepted_total") == 1.0
    assert metric(text, "postroom_connections_total", listener="smtp", result="accepted") == 1.0
    assert metric(text, "postroom_delivery_latency_seconds_count", destination="local") == 1.0
    assert metric(text, "postroom_queue_messages") is not None
    assert metric(text, "postroom_queue_oldest_message_age_seconds") is not None
    text = wait_for(
        lambda: (t := curl_status(curl(url))[1])
        and metric(t, "postroom_connections_current", listener="smtp") == 0.0
        and t,
        what="the session's close in /metrics",
    )
    assert (metric(text, "postroom_smtp_received_bytes_total", listener="smtp") or 0) > 30
    assert (metric(text, "postroom_smtp_sent_bytes_total", listener="smtp") or 0) > 30
    assert "sender@client.test" not in text  # /metrics carries no addresses


def test_a_refused_recipient_is_counted_by_reason(admin_server: ServerThread) -> None:
    with smtplib.SMTP(*admin_server.address, timeout=20) as client:
        client.ehlo("client.test")
        client.mail("sender@client.test")
        code, _ = client.rcpt("nobody@postroom.test")
        assert code == 550
    status, text = curl_status(curl(base_url(admin_server) + "/metrics"))
    assert status == 200
    assert metric(text, "postroom_recipients_refused_total", reason="no_such_user") == 1.0


def test_everything_but_metrics_needs_the_password(admin_server: ServerThread) -> None:
    url = base_url(admin_server)
    refused = http_error(lambda: get_json(url + "/api/overview"))
    assert refused.code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic")
    wrong = "Basic " + base64.b64encode(b"admin:wrong").decode()
    assert http_error(lambda: get_json(url + "/api/overview", Authorization=wrong)).code == 401
    status, _ = curl_status(curl(url + "/"))
    assert status == 302  # the dashboard sends a browser to the login form
    status, body = curl_status(curl(url + "/login"))
    assert status == 200
    assert 'name="password"' in body


def test_api_lists_searches_retries_and_deletes_a_queued_message(admin_server: ServerThread) -> None:
    url = base_url(admin_server)
    queue_id = send(admin_server, "someone@remote.test")  # no DNS answers here: it stays queued
    overview = wait_for(
        lambda: (o := get_json(url + "/api/overview", Authorization=BASIC))["queue"]["messages"] == 1 and o,
        what="the queued message in the overview",
    )
    assert overview["queue"]["oldest_age"] >= 0
    found = get_json(url + "/api/queue?q=REMOTE.test", Authorization=BASIC)["messages"]
    assert [message["queue_id"] for message in found] == [queue_id]
    assert get_json(url + "/api/queue?q=nothing-like-it", Authorization=BASIC)["messages"] == []
    one = get_json(f"{url}/api/queue/{queue_id}", Authorization=BASIC)
    assert one["recipients"][0]["address"] == "someone@remote.test"

    wait_for(
        lambda: get_json(f"{url}/api/queue/{queue_id}", Authorization=BASIC)["recipients"][0]["attempts"] >= 1
        and not _in_delivery(url, queue_id),
        what="a first attempt",
    )
    status, body = curl_status(
        curl("-u", f"admin:{ADMIN_PASSWORD}", "-H", "Content-Type: application/json", "-d", "{}",
             f"{url}/api/queue/{queue_id}/retry")
    )
    assert (status, json.loads(body)["queue_id"]) == (200, queue_id)

    # A form post (what another site could make a browser send) is refused, whatever its credentials.
    delete = f"{url}/api/queue/{queue_id}/delete"
    status, _ = curl_status(curl("-u", f"admin:{ADMIN_PASSWORD}", "-d", "x=1", delete))
    assert status == 403
    status, _ = curl_status(
        curl("-u", f"admin:{ADMIN_PASSWORD}", "-H", "Content-Type: application/json", "-H",
             "Origin: http://evil.test", "-d", "{}", f"{url}/api/queue/{queue_id}/delete")
    )
    assert status == 403

    status, body = curl_status(
        curl("-u", f"admin:{ADMIN_PASSWORD}", "-H", "Content-Type: application/json", "-d", "{}",
             f"{url}/api/queue/{queue_id}/delete")
    )
    assert (status, json.loads(body)) == (200, {"queue_id": queue_id, "deleted": 1})
    assert get_json(url + "/api/queue", Authorization=BASIC)["messages"] == []
    status, body = curl_status(curl("-u", f"admin:{ADMIN_PASSWORD}", f"{url}/api/queue/{queue_id}"))
    assert status == 404
    assert "no message" in json.loads(body)["error"]


def _in_delivery(url: str, queue_id: str) -> bool:
    recipient = get_json(f"{url}/api/queue/{queue_id}", Authorization=BASIC)["recipients"][0]
    return recipient.get("claimed_until") is not None and recipient["next_attempt_at"] is None


def test_login_cookie_works_and_posts_need_its_csrf_token(admin_server: ServerThread) -> None:
    url = base_url(admin_server)
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = urllib.parse.urlencode({"password": ADMIN_PASSWORD}).encode()
    with opener.open(url + "/login", data=form, timeout=20) as response:
        page = response.read().decode()
    assert response.url == url + "/"
    (cookie,) = list(jar)
    assert cookie.name == "postroom_admin"
    assert cookie.has_nonstandard_attr("HttpOnly")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert csrf is not None
    with opener.open(url + "/api/overview", timeout=20) as response:
        assert "queue" in json.load(response)

    queue_id = send(admin_server, "someone@remote.test")
    retry = f"{url}/api/queue/{queue_id}/retry"
    bare = urllib.request.Request(retry, data=b"{}", method="POST")
    refused = http_error(lambda: opener.open(bare, timeout=20))
    assert refused.code == 403
    headers = {"X-CSRF-Token": csrf.group(1)}
    request = urllib.request.Request(retry, data=b"{}", method="POST", headers=headers)
    with opener.open(request, timeout=20) as response:
        assert json.load(response)["queue_id"] == queue_id


def test_wrong_passwords_are_refused_then_throttled(admin_server: ServerThread) -> None:
    url = base_url(admin_server) + "/login"
    statuses = []
    for _ in range(11):
        status, _ = curl_status(curl("-d", "password=wrong", url))
        statuses.append(status)
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429


def test_without_an_admin_password_only_metrics_are_served(tmp_path: Any) -> None:
    config: Config = make_config(tmp_path, admin={"listen": "127.0.0.1:0"})
    with server_thread(config) as server:
        url = base_url(server)
        assert curl_status(curl(url + "/metrics"))[0] == 200
        status, body = curl_status(curl(url + "/login"))
        assert "postroom admin passwd" in body
        status, _ = curl_status(curl("-d", f"password={ADMIN_PASSWORD}", url + "/login"))
        assert status == 401


def test_admin_passwd_sets_a_password_a_running_server_accepts(tmp_path: Any) -> None:
    from tests.helpers.server import write_config

    config, path = write_config(tmp_path, admin={"listen": "127.0.0.1:0"})
    with server_thread(config) as server:
        url = base_url(server)
        result = subprocess.run(
            [*_postroom(), "-c", str(path), "admin", "passwd", "--password-stdin"],
            input="s3cret admin\n", capture_output=True, text=True, timeout=60, check=False,
        )
        assert result.returncode == 0, result.stderr
        assert (config.data_dir / "admin-password").stat().st_mode & 0o777 == 0o600
        status, _ = curl_status(curl("-u", "admin:s3cret admin", url + "/api/overview"))
        assert status == 200


def _postroom() -> list[str]:
    import sys

    return [sys.executable, "-m", "postroom.cli.main"]


def test_the_dns_checks_of_our_domains_are_served_to_the_dashboard(
    tmp_path: Any, admin_hash: str, dns_server: DnsServer
) -> None:
    dns_server.add("mx.postroom.test", "A", "192.0.2.25").add("postroom.test", "MX", "10 mx.postroom.test.")
    dns_server.add("postroom.test", "TXT", "v=spf1 mx -all").add("192.0.2.25", "PTR", "mx.postroom.test")
    config = make_config(
        tmp_path,
        admin={"listen": "127.0.0.1:0", "password_hash": admin_hash},
        local={"domains": ["postroom.test"]},
        dns={"nameservers": [dns_server.address], "timeout": 2},
    )
    with server_thread(config) as server:
        answer = get_json(base_url(server) + "/api/checks", Authorization=BASIC)
    assert answer["available"] is True
    found = {(finding["check"], finding["subject"]): finding for finding in answer["findings"]}
    assert found["mx", "postroom.test"]["status"] == "OK"
    assert found["spf", "postroom.test"]["status"] == "OK"
    assert found["ptr", "192.0.2.25"]["status"] == "OK"
    assert found["dmarc", "_dmarc.postroom.test"]["status"] != "OK"
    assert "_dmarc.postroom.test" in found["dmarc", "_dmarc.postroom.test"]["record"]
    assert found["dkim", "postroom.test"]["status"] != "OK"  # no key made for it
