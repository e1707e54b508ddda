"""Resource limits of a running site manager, attacked as issue 12 found them open.

A real ``seawall site run`` on localhost, over real sockets: a 1 GiB body (streamed from
one reused 1 MiB buffer, never held by the test either) is answered 413 with the
manager's resident memory (``/proc/PID/status`` VmRSS) bounded; request headers sent byte
by byte are cut off; wrong passwords are throttled with growing waits (429, Retry-After);
100 parallel wrong logins from 100 source addresses (127.0.0.x: all loopback) leave
``/health`` answering within a second and the paired site raises no false
``peer-unreachable``; refused requests name their authenticated caller in the event log;
a full disk under the database (a real tmpfs, filled) is an alert, not a failing monitor.
"""

from __future__ import annotations

import concurrent.futures
import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from seawall.errors import DatabaseFull
from seawall.localsites import LocalSite
from seawall.manager.access.throttle import SOURCE_FREE_FAILURES
from seawall.serving import HEADER_TIMEOUT_S
from support.sites import stop_for_sure
from support.tmpfs import fill, mounted_tmpfs

GIB = 1 << 30
CHUNK = bytes(1 << 20)
RSS_GROWTH_MAX_BYTES = 50 << 20
HEALTH_LATENCY_MAX_S = 1.0
PASSWORD = "correct horse battery"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def address(site: LocalSite) -> tuple[str, int]:
    return site.config.api_host, site.config.api_port


def connect(site: LocalSite, source: str | None = None) -> ssl.SSLSocket:
    """A raw TLS connection to the site's API (trusting its certificate only)."""
    raw = socket.create_connection(address(site),
                                   source_address=None if source is None else (source, 0))
    return site.tls.wrap_socket(raw, server_hostname=site.config.api_host)


class Reader:
    """Reads a connection from the test's own thread (a TLS socket is not for two threads
    at once), so that an answer sent before the body is all in (and the connection then
    reset) is still seen."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.data = bytearray()
        self.ended = False

    def poll(self, timeout_s: float = 0.0) -> None:
        """Take what has come in, waiting up to ``timeout_s`` for something."""
        while not self.ended and (self.sock.pending() or select.select(
                [self.sock], [], [], timeout_s)[0]):
            try:
                chunk = self.sock.recv(65536)
            except ssl.SSLWantReadError:
                return
            except OSError:
                chunk = b""
            self.data.extend(chunk)
            self.ended = not chunk
            timeout_s = 0.0

    def wait(self, timeout_s: float) -> bool:
        """Read to the end of the connection; whether it ended within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.ended and time.monotonic() < deadline:
            self.poll(max(0.0, min(0.1, deadline - time.monotonic())))
        return self.ended

    def response(self) -> tuple[int, dict[str, str], bytes]:
        head, _, body = bytes(self.data).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        return int(lines[0].split()[1]), headers, body


def stream_body(sock: ssl.SSLSocket, reader: Reader, total_bytes: int, chunked: bool) -> int:
    """Send up to ``total_bytes`` of zeroes until the server answers or closes; bytes sent."""
    sent = 0
    frame = b"%x\r\n" % len(CHUNK) + CHUNK + b"\r\n" if chunked else CHUNK
    while sent < total_bytes and not reader.ended and not reader.data:
        try:
            sock.sendall(frame)
        except OSError:  # reset by the server: it will not read the rest
            break
        sent += len(CHUNK)
        reader.poll()
    return sent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSite]:
    directory = tmp_path_factory.mktemp("limits")
    log = (directory / "site.log").open("w")
    site = LocalSite("prod", directory / "prod", log)
    try:
        site.start()
        yield site
    finally:
        stop_for_sure(site)
        log.close()


def test_a_1_gib_login_body_is_refused_before_it_is_read(site: LocalSite) -> None:
    assert site.process is not None
    before = rss_bytes(site.process.pid)
    head = (b"POST /api/v1/login HTTP/1.1\r\nHost: manager\r\n"
            b"Content-Type: application/json\r\n")
    # Content-Length says it: answered at once, before one byte of the body is sent
    with connect(site) as sock:
        reader = Reader(sock)
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % GIB)
        assert reader.wait(10), "no answer to a 1 GiB Content-Length"
        status, headers, body = reader.response()
        assert status == 413 and headers["connection"] == "close"
        assert json.loads(body)["code"] == "too_large"
        assert "1.0 GiB" in json.loads(body)["message"]
    # chunked, no length: answered once the limit is passed, the rest never read
    with connect(site) as sock:
        reader = Reader(sock)
        sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
        sent = stream_body(sock, reader, GIB, chunked=True)
        assert reader.wait(10)
        assert sent < GIB // 4, f"the manager took {sent} bytes of an over-limit body"
        status, _headers, body = reader.response()
        assert status == 413 and json.loads(body)["code"] == "too_large"
    growth = rss_bytes(site.process.pid) - before
    print(f"manager VmRSS {before / 2**20:.1f} MiB before, +{growth / 2**20:.1f} MiB after "
          f"a 1 GiB body (chunked: {sent / 2**20:.0f} MiB sent before the answer)")
    assert growth < RSS_GROWTH_MAX_BYTES
    assert site.api.get("/health")["status"] == "ok"


def test_headers_sent_byte_by_byte_are_cut_off(site: LocalSite) -> None:
    request = (b"GET /health HTTP/1.1\r\nHost: manager\r\nUser-Agent: "
               + b"s" * 400 + b"\r\n\r\n")
    started_s = time.monotonic()
    with connect(site) as sock:
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            readable, _, _ = select.select([sock], [], [], 0.1)
            try:
                if readable and sock.recv(1024) == b"":
                    break  # closed by the server
            except ConnectionResetError:
                break  # closed by the server with our bytes unread: a reset
            assert site.api.get("/health")["status"] == "ok"  # others are served meanwhile
        else:
            raise AssertionError("the headers went in whole, byte by byte, in "
                                 f"{time.monotonic() - started_s:.0f} s")
    cut_after_s = time.monotonic() - started_s
    print(f"slow headers cut off after {cut_after_s:.1f} s")
    assert HEADER_TIMEOUT_S - 1 < cut_after_s < HEADER_TIMEOUT_S + 5


def login(site: LocalSite, user: str, password: str, source: str = "127.0.0.1") -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source, verify=site.tls)
    with httpx.Client(transport=transport, timeout=60) as client:
        return client.post(f"{site.url}/api/v1/login", json={"user": user, "password": password})


def test_wrong_passwords_wait_longer_each_time_and_a_right_one_after_the_wait_works(
        site: LocalSite) -> None:
    site.api.post("/api/v1/users", {"name": "carol", "role": "viewer", "password": PASSWORD})
    assert [login(site, "carol", "wrong").status_code for _ in range(5)] == [401] * 5
    refused = login(site, "carol", "wrong")
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "1")
    assert refused.json()["code"] == "rate_limited"
    time.sleep(1.05)
    assert login(site, "carol", "wrong").status_code == 401
    refused = login(site, "carol", PASSWORD)  # the right password waits its turn too
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "2")
    time.sleep(2.05)
    assert login(site, "carol", PASSWORD).status_code == 201
    assert login(site, "carol", "wrong").status_code == 401  # the success forgot the failures


def test_a_burst_of_wrong_passwords_is_mostly_refused_unchecked(site: LocalSite) -> None:
    """The finding: 30 wrong passwords in 4.4 s, each one checked."""
    site.api.post("/api/v1/users", {"name": "erin", "role": "viewer", "password": PASSWORD})
    started_s = time.monotonic()
    codes = [login(site, "erin", f"guess {i}", source="127.0.0.2").status_code
             for i in range(30)]
    elapsed_s = time.monotonic() - started_s
    waits_passed = next(n for n in range(64) if 2 ** n - 1 > elapsed_s)  # 1, 2, 4... s
    print(f"30 wrong passwords in {elapsed_s:.1f} s: {codes.count(401)} checked, "
          f"{codes.count(429)} refused unchecked")
    assert codes[:5] == [401] * 5 and codes[5] == 429 and set(codes) == {401, 429}
    assert codes.count(401) <= 5 + waits_passed


def test_one_source_trying_many_names_is_throttled(site: LocalSite) -> None:
    source = "127.0.0.3"
    codes = [login(site, f"nobody{i}", "guess", source).status_code
             for i in range(SOURCE_FREE_FAILURES)]
    assert codes == [401] * SOURCE_FREE_FAILURES
    refused = login(site, "somebody-else", "guess", source)
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "1")
    assert login(site, "somebody-else", "guess", "127.0.0.4").status_code == 401  # another


def test_parallel_wrong_logins_leave_health_and_the_peer_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAWALL_MONITOR_INTERVAL_S", "0.3")
    log = (tmp_path / "sites.log").open("w")
    prod, dr = LocalSite("prod", tmp_path / "prod", log), LocalSite("dr", tmp_path / "dr", log)
    try:
        prod.launch()
        dr.launch()
        prod.wait_started()
        dr.wait_started()
        prod.pair_with(dr)
        dr.api.post("/api/v1/users", {"name": "dave", "role": "viewer", "password": PASSWORD})
        time.sleep(1.0)  # a few probe rounds of prod's monitor with dr answering
        assert dr.process is not None
        rss_before = rss_bytes(dr.process.pid)
        latencies_s: list[float] = []
        stop = threading.Event()

        def poll_health() -> None:
            with httpx.Client(timeout=30, verify=dr.tls) as client:
                while not stop.is_set():
                    started_s = time.monotonic()
                    client.get(f"{dr.url}/health").raise_for_status()
                    latencies_s.append(time.monotonic() - started_s)
                    time.sleep(0.02)

        def wrong_login(index: int) -> int:
            # a source and a user name each (a spray): no throttle key repeats, so only the
            # bounded pool of password checks stands between the flood and the event loop
            source = f"127.0.{1 + index // 250}.{1 + index % 250}"
            body = json.dumps({"user": f"user{index}", "password": "guess"}).encode()
            with connect(dr, source) as sock:
                reader = Reader(sock)  # raw sockets: the test's own threads stay light
                sock.sendall(b"POST /api/v1/login HTTP/1.1\r\nHost: manager\r\n"
                             b"Connection: close\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                assert reader.wait(60)
                return reader.response()[0]

        poller = threading.Thread(target=poll_health)
        poller.start()
        started_s = time.monotonic()
        try:
            with concurrent.futures.ThreadPoolExecutor(100) as pool:
                codes = list(pool.map(wrong_login, range(100)))
        finally:
            flood_s = time.monotonic() - started_s
            time.sleep(1.0)  # prod's probes after the flood too
            stop.set()
            poller.join()
        rss_growth = rss_bytes(dr.process.pid) - rss_before
        print(f"100 parallel wrong logins in {flood_s:.2f} s: {codes.count(401)} x 401, "
              f"{codes.count(429)} x 429; /health max {max(latencies_s) * 1000:.0f} ms over "
              f"{len(latencies_s)} probes; manager VmRSS +{rss_growth / 2**20:.1f} MiB")
        assert set(codes) <= {401, 429} and codes.count(401) >= 1
        assert max(latencies_s) < HEALTH_LATENCY_MAX_S
        alerts: list[dict[str, Any]] = prod.api.get("/api/v1/alerts", all=True)
        assert not [a for a in alerts if a["kind"] == "peer-unreachable"], alerts
        assert login(dr, "dave", PASSWORD).status_code == 201  # dave was never throttled
    finally:
        for site in (prod, dr):
            stop_for_sure(site)
        log.close()


def test_refused_requests_name_their_authenticated_caller(site: LocalSite) -> None:
    viewer = site.api.post("/api/v1/users", {"name": "victor", "role": "viewer"})["token"]
    admin = {"Authorization": f"Bearer {site.token}"}
    as_viewer = {"Authorization": f"Bearer {viewer}"}
    with httpx.Client(base_url=site.url, timeout=30, verify=site.tls) as client:
        # refused by role, by validation, by a service error, by size; none authenticated
        assert client.post("/api/v1/groups", json={"name": "x"}, headers=as_viewer
                           ).status_code == 403
        assert client.post("/api/v1/groups", json={"volumes": 7}, headers=admin
                           ).status_code == 422
        assert client.post("/api/v1/groups/nothing/checkpoints", json={"name": "t"},
                           headers=admin).status_code == 404
        assert client.post("/api/v1/groups", content=b"{" + b" " * (2 << 20) + b"}",
                           headers={**admin, "Content-Type": "application/json"}
                           ).status_code == 413
        assert client.post("/api/v1/groups", json={"name": "x"}).status_code == 401
        assert client.post("/api/v1/groups", json={"name": "x"},
                           headers={"Authorization": "Bearer swat_forged"}).status_code == 401
    expected = [(401, "anonymous"), (401, "anonymous"), (403, "victor"), (404, "admin"),
                (413, "admin"), (422, "admin")]
    deadline = time.monotonic() + 10  # each is recorded after its answer went out
    while True:
        events = site.api.get("/api/v1/events", limit=6)
        seen = sorted((e["status_code"], e["user"]) for e in events)
        if seen == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert seen == expected, events


def test_a_full_disk_under_the_database_is_an_alert_not_a_failed_monitor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The finding: with the data disk full the manager's alert about it failed (`database
    or disk is full`) and `alert list` stayed empty."""
    monkeypatch.setenv("SEAWALL_MONITOR_INTERVAL_S", "0.3")
    log_path = tmp_path / "site.log"
    with mounted_tmpfs(tmp_path / "fs", 96 << 20) as root, log_path.open("w") as log:
        site = LocalSite("prod", root / "prod", log, buffer_bytes=8 << 20, bitmap_bytes=1 << 20)
        try:
            site.start()
            fill(root / "filler", leave_bytes=0)
            alert = wait_for_alert(site, "manager-database:database", active=True)
            assert alert["severity"] == "error" and "out of space" in alert["message"]
            with pytest.raises(DatabaseFull, match="out of space"):  # 507, not a 500
                site.api.post("/api/v1/users", {"name": "frank", "role": "viewer"})
            time.sleep(1.0)  # rounds go on while it is full
            assert wait_for_alert(site, "manager-database:database", active=True)
            (root / "filler").unlink()
            wait_for_alert(site, "manager-database:database", active=False)
        finally:
            stop_for_sure(site)
    text = log_path.read_text()
    assert "monitor round failed" not in text and "Traceback" not in text
    # once per episode each, not every round or request
    assert text.count("alert raised (error): the manager's database is out of space") == 1
    assert text.count("alerts are kept in memory") == 1
    assert text.count("cannot record events") == 1


def wait_for_alert(site: LocalSite, key: str, active: bool,
                   timeout_s: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alerts = {a["id"]: a for a in site.api.get("/api/v1/alerts")}
        if (key in alerts) == active:
            return alerts.get(key, {})
        time.sleep(0.2)
    raise AssertionError(f"alert {key} not {'raised' if active else 'cleared'} in time")
