"""`fgvc server run` against clients that stall, as a real process: the sockets are opened and held by the test.

What a stalled client may hold is bounded by construction, and these tests check the construction:
a stranger's body is never read (the 401 comes from the headers), connections that owe headers or a body
are closed at their deadline, and new requests beyond --max-connections get 503 instead of queueing.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path

from .conftest import add_team, bearer, make_comp, post

API = "/api/submissions"
DECLARED = 16 * 1024 * 1024  # the largest body the server accepts by default
PARTIAL_HEADERS = b"POST /api/submissions HTTP/1.1\r\nHost: fgvc\r\nContent-Le"


def _rss_bytes(pid: int) -> int:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/PID/status")


def _connect(port: int, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if first:
        sock.sendall(first)
    return sock


def _upload_headers(length: int, authorization: str | None = None) -> bytes:
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    return (f"POST {API} HTTP/1.1\r\nHost: fgvc\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {length}\r\n\r\n").encode()


def _closing_times(socks: list[socket.socket], limit: float) -> list[float]:
    """The monotonic time at which the server closed each socket (replies read and dropped), all watched at once."""
    import selectors

    closed: dict[int, float] = {}
    with selectors.DefaultSelector() as selector:
        for i, sock in enumerate(socks):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, i)
        deadline = time.monotonic() + limit
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=deadline - time.monotonic()):
                try:
                    data = key.fileobj.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    closed[key.data] = time.monotonic()
                    selector.unregister(key.fileobj)
    assert len(closed) == len(socks), f"still open after {limit} s: {sorted(set(range(len(socks))) - set(closed))}"
    return [closed[i] for i in range(len(socks))]


def _status(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_a_valid_submission_is_answered_at_once_beside_70_stalled_clients_and_memory_stays_flat(
        tmp_path, make_service, server_process):
    comp = make_comp(tmp_path, None)
    token = add_team(make_service(comp), "alpha")
    server = server_process(comp.directory, "--header-timeout", "300", "--body-timeout", "300",
                            "--max-connections", "100")
    body = json.dumps(comp.body("alpha")).encode()
    assert post(server.url + API, body, bearer(token, **{"Idempotency-Key": "warm-up"}))[0] == 200
    before = _rss_bytes(server.process.pid)
    held = [_connect(server.port, PARTIAL_HEADERS if i % 2 else b"") for i in range(50)]  # idle, unfinished
    for _ in range(20):  # no Authorization, 16 MB declared: the 401 arrives before a byte of the body is sent
        upload = _connect(server.port, _upload_headers(DECLARED))
        reply = upload.recv(65536)
        assert reply.startswith(b"HTTP/1.1 401 "), reply[:200]
        upload.sendall(b" " * (DECLARED - 1))  # then all of the body but its last byte, and stall
        held.append(upload)
    try:
        # Bound: the server keeps no body of a stranger. Per connection it buffers at most one socket read
        # (asyncio reads up to 256 KiB) plus h11's 16 KiB of unfinished headers: 70 x 272 KiB < 19 MiB, so
        # 32 MiB is generous; reading the bodies, as before, grows it by 20 x 16 MiB = 320 MiB.
        grown = _rss_bytes(server.process.pid) - before
        assert grown < 32 * 1024 * 1024, f"server memory grew by {grown / 2**20:.1f} MiB"
        start = time.monotonic()
        status, reply = post(server.url + API, body.replace(b'"alpha"', b'"alpha" '),
                             bearer(token, **{"Idempotency-Key": "under-attack"}), timeout=10)
        elapsed = time.monotonic() - start
        assert status == 200 and reply["accuracy"] == 0.5
        assert elapsed < 1.0, f"a valid submission took {elapsed:.2f} s beside 70 stalled connections"
        # --max-connections 100: 70 held + 29 more are served; the 101st connection's request gets 503
        held += [_connect(server.port) for _ in range(30)]
        assert _status(server.port) == 503
    finally:
        for sock in held:
            sock.close()


def test_connections_owing_headers_or_a_body_are_closed_at_their_deadlines(tmp_path, make_service, server_process):
    comp = make_comp(tmp_path, None)
    token = add_team(make_service(comp), "alpha")
    server = server_process(comp.directory, "--header-timeout", "1", "--body-timeout", "3",
                            "--keep-alive-timeout", "6")
    opened = time.monotonic()
    socks = [_connect(server.port),  # idle: owes its headers
             _connect(server.port, PARTIAL_HEADERS),  # headers begun, never finished
             _connect(server.port, _upload_headers(1000, f"Bearer {token}") + b'{"images": '),  # body begun
             _connect(server.port, _upload_headers(DECLARED) + b"x" * 1000),  # 401 sent; the rest never comes
             _connect(server.port, b"GET /healthz HTTP/1.1\r\nHost: fgvc\r\n\r\n")]  # answered, then idle
    # which limit closed each, told apart by when: headers 1 s, body 3 s (after the headers), keep-alive 6 s
    windows = [(1, 3), (1, 3), (3, 6), (3, 6), (6, 20)]
    after = [round(closed - opened, 2) for closed in _closing_times(socks, 20)]
    assert all(earliest <= t < latest for t, (earliest, latest) in zip(after, windows, strict=True)), after
    assert "Traceback" not in server.log_path.read_text()
