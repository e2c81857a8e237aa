"""Deployment as README's 'Running on a network' says: HTTPS, forwarded headers believed only from the proxy,
no query strings in the access log, and the README's own Caddy and nginx configurations in front of a real server.

The proxy tests run the real binaries with the README's blocks (site name, certificate paths and ports replaced
by the test's) and skip, saying why, where the binary is missing (`.ci/run` installs both).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fgvc.cli import main

from .conftest import REPO, add_team, bearer, free_port, make_comp, terminate

SPOOFED = "203.0.113.7"  # TEST-NET-3: nobody's address


def _openssl_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the `cryptography` package is not a dependency: the CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: it makes the test's self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def _get(port: int, path: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None,
         method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
    conn = (http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context) if context else
            http.client.HTTPConnection("127.0.0.1", port, timeout=30))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _wait_until(ready, what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if ready():
                return
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after 60 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


class _Process:
    """A command in the background with its output in a log file; stopped at the end of the test."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self.log = log.open("ab")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
                                        env={**os.environ, **(env or {})})

    def stop(self) -> None:
        terminate(self.process)
        self.log.close()


@pytest.fixture
def processes():
    started: list[_Process] = []

    def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> _Process:
        started.append(_Process(args, log, env))
        return started[-1]

    yield start
    for process in reversed(started):
        process.stop()


def _server(processes, comp_dir: Path, log: Path, *args: str, context: ssl.SSLContext | None = None) -> int:
    port = free_port()
    server = processes([sys.executable, "-m", "fgvc", "server", "run", str(comp_dir), "--port", str(port), *args], log)
    _wait_until(lambda: _get(port, "/healthz", context=context)[0] == 200, "fgvc server", server.process, log)
    return port


def _access_lines(log: Path, path: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if f'"GET {path}' in line]


def test_https_with_a_self_signed_certificate(tmp_path, processes):
    comp = make_comp(tmp_path, None)
    cert, key = _openssl_cert(tmp_path)
    context = ssl.create_default_context(cafile=str(cert))  # verifies the certificate and the address
    log = tmp_path / "server.log"
    port = _server(processes, comp.directory, log, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                   context=context)
    status, body = _get(port, "/api/leaderboard", context=context)
    assert status == 200 and b'"title":"Birds <2027>"' in body
    assert f"on https://127.0.0.1:{port}/" in log.read_text()
    with pytest.raises((ConnectionError, http.client.HTTPException)):  # plain HTTP is not answered in clear
        _get(port, "/healthz")


def test_a_wrong_certificate_is_one_line(tmp_path, capsys):
    comp = make_comp(tmp_path, None)
    (tmp_path / "not-a-cert.pem").write_text("hello\n")
    assert main(["server", "run", str(comp.directory), "--port", "0",
                 "--ssl-certfile", str(tmp_path / "not-a-cert.pem")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"fgvc: error: cannot use --ssl-certfile {tmp_path}")
    assert main(["server", "run", str(comp.directory), "--ssl-keyfile", "k.pem"]) == 2
    assert "--ssl-keyfile needs --ssl-certfile" in capsys.readouterr().err


def test_forwarded_headers_are_believed_only_from_the_trusted_proxy_and_queries_stay_out_of_the_log(
        tmp_path, processes):
    comp = make_comp(tmp_path, None)
    spoof = {"X-Forwarded-For": SPOOFED, "X-Forwarded-Proto": "https"}
    untrusted_log, trusted_log = tmp_path / "untrusted.log", tmp_path / "trusted.log"

    port = _server(processes, comp.directory, untrusted_log)  # no --trusted-proxy: nobody is believed
    assert _get(port, "/api/leaderboard?token=fgvc_secret-in-a-query", spoof)[0] == 200
    [line] = _access_lines(untrusted_log, "/api/leaderboard")
    assert re.search(r'127\.0\.0\.1:[1-9]\d* - "GET /api/leaderboard\?\[query redacted\] HTTP/1\.1" 200', line), line
    assert SPOOFED not in untrusted_log.read_text() and "fgvc_secret" not in untrusted_log.read_text()

    port = _server(processes, comp.directory, trusted_log, "--trusted-proxy", "127.0.0.1")
    assert _get(port, "/api/leaderboard", spoof)[0] == 200
    [line] = _access_lines(trusted_log, "/api/leaderboard")
    assert f'{SPOOFED}:0 - "GET /api/leaderboard HTTP/1.1" 200' in line  # the proxy's word for the client
    assert "forwarded headers trusted from 127.0.0.1" in trusted_log.read_text()


def _readme_block(language: str) -> str:
    """The one ```language block of README.md."""
    [block] = re.findall(rf"```{language}\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), re.S)
    return block


def _through_proxy(port: int, token: str, comp, context: ssl.SSLContext | None, log: Path,
                   too_large: tuple[int, ...] = (413,)) -> None:
    """What every proxy must do: pass a submission, put the client's address (not a spoofed one) in
    X-Forwarded-For, and refuse a body over 16 MB itself (the server never sees that one)."""
    import json

    status, body = _get(port, "/api/submissions", {**bearer(token), "X-Forwarded-For": SPOOFED,
                                                    "Content-Type": "application/json"},
                        context=context, method="POST", body=json.dumps(comp.body("alpha")).encode())
    assert status == 200 and json.loads(body)["accuracy"] == 0.5
    status, _ = _get(port, "/api/submissions", bearer(token), context=context, method="POST",
                     body=b" " * (17 * 1024 * 1024))
    assert status in too_large
    # the valid submission's line (Caddy streams the oversized body: the server may refuse it first, from its headers)
    [line] = [line for line in log.read_text().splitlines() if '"POST /api/submissions' in line and '" 200' in line]
    assert line.split()[1] == "127.0.0.1:0", line  # the address the proxy saw, from its X-Forwarded-For


@pytest.fixture
def behind_a_proxy(tmp_path, make_service, processes):
    comp = make_comp(tmp_path, None)
    token = add_team(make_service(comp), "alpha")
    log = tmp_path / "server.log"
    port = _server(processes, comp.directory, log, "--trusted-proxy", "127.0.0.1")
    return comp, token, port, log


def test_the_readme_caddyfile_in_front_of_the_server(tmp_path, processes, behind_a_proxy):
    if shutil.which("caddy") is None:
        pytest.skip("caddy is not installed (`.ci/run` installs Debian's caddy)")
    comp, token, server_port, log = behind_a_proxy
    port = free_port()
    site = _readme_block("caddyfile").replace("scores.example.edu", f"http://127.0.0.1:{port}")
    (tmp_path / "Caddyfile").write_text("{\n\tadmin off\n}\n" + site.replace("127.0.0.1:8000",
                                                                             f"127.0.0.1:{server_port}"))
    caddy_log = tmp_path / "caddy.log"
    caddy = processes(["caddy", "run", "--config", str(tmp_path / "Caddyfile"), "--adapter", "caddyfile"], caddy_log,
                      env={"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)})
    _wait_until(lambda: _get(port, "/healthz")[0] == 200, "caddy", caddy.process, caddy_log)
    _through_proxy(port, token, comp, None, log, too_large=(413, 502))  # 502: Caddy < 2.7 (caddy#5652)


def test_the_readme_nginx_configuration_in_front_of_the_server(tmp_path, processes, behind_a_proxy):
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx is None:
        pytest.skip("nginx is not installed (`.ci/run` installs Debian's nginx)")
    comp, token, server_port, log = behind_a_proxy
    cert, key = _openssl_cert(tmp_path)
    port = free_port()
    server_block = (_readme_block("nginx").replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
                    .replace("/etc/letsencrypt/live/scores.example.edu/fullchain.pem", str(cert))
                    .replace("/etc/letsencrypt/live/scores.example.edu/privkey.pem", str(key))
                    .replace("127.0.0.1:8000", f"127.0.0.1:{server_port}"))
    temp = tmp_path / "nginx"
    temp.mkdir()
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\nworker_processes 1;\npid {temp}/nginx.pid;\nerror_log {temp}/error.log;\nevents {{}}\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {temp}/body;\nproxy_temp_path {temp}/proxy;\n"
        f"{server_block}}}\n")
    nginx_log = tmp_path / "nginx.log"
    proxy = processes([nginx, "-p", str(temp), "-c", str(tmp_path / "nginx.conf")], nginx_log)
    context = ssl.create_default_context(cafile=str(cert))
    _wait_until(lambda: _get(port, "/healthz", context=context)[0] == 200, "nginx", proxy.process, nginx_log)
    _through_proxy(port, token, comp, context, log)



@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--trusted-proxy", "proxy.example.edu", "'proxy.example.edu' is not an IP address or network"),
    ("--header-timeout", "0", "0 is out of range: it must be a number of seconds above 0"),
    ("--body-timeout", "soon", "'soon' is not a number of seconds"),
    ("--max-connections", "0", "0 is out of range: it must be at least 1")])
def test_deployment_flags_are_checked_by_the_parser(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["server", "run", str(tmp_path), flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}: {message}" in capsys.readouterr().err
