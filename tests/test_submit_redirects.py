"""`fgvc submit` against a redirecting server: nothing is sent on, the token stays home, no success is printed.

A local redirector answers every request with a 3xx pointing at a second local server (another port, so
another origin) that records what reaches it and answers with a score, as an attacker's server would.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fgvc.cli import main
from fgvc.competition.submission import write_submission

TOKEN = "fgvc_secret-token-of-team-7"


class _Local:
    """A ThreadingHTTPServer on 127.0.0.1 whose handler answers every method the same way."""

    def __init__(self, answer) -> None:
        self.received: list[tuple[str, str | None]] = []  # (method, Authorization header)
        local = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                local.received.append((self.command, self.headers.get("Authorization")))
                status, headers, payload = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _any

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def elsewhere():
    """The other origin: records every request and answers with a score, as a fake scoring server would."""
    server = _Local((200, {"Content-Type": "application/json"}, b'{"accuracy": 0.99}'))
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_an_error_naming_the_location_and_nothing_reaches_it(code, elsewhere, tmp_path, capsys):
    target = elsewhere.url + "/steal"
    redirector = _Local((code, {"Location": target}, b""))
    try:
        path = tmp_path / "submission.json"
        write_submission(path, {"a.jpg": "00001"}, "team-7")
        url = redirector.url + "/api/submissions"
        assert main(["submit", str(path), "--url", url, "--token", TOKEN, "--retries", "0"]) == 2
    finally:
        redirector.close()
    out, err = capsys.readouterr()
    assert out == ""  # no "accuracy is 0.99"
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"fgvc: error: {url} answered HTTP {code} (a redirect) to '{target}'; the submission "
                          "was not delivered or scored and was not sent on: if that is the scoring server's address, "
                          "pass it as --url")
    assert redirector.received == [("POST", f"Bearer {TOKEN}")]
    assert elsewhere.received == []  # neither the token nor the body left for the other origin


def test_a_relative_location_is_named_in_full(tmp_path, capsys):
    redirector = _Local((302, {"Location": "/results/"}, b""))
    try:
        path = tmp_path / "submission.json"
        write_submission(path, {"a.jpg": "00001"}, "team-7")
        assert main(["submit", str(path), "--url", redirector.url + "/results", "--retries", "0"]) == 2
    finally:
        redirector.close()
    err = capsys.readouterr().err
    assert f"answered HTTP 302 (a redirect) to '{redirector.url}/results/'" in err
    assert [method for method, _ in redirector.received] == ["POST"]
