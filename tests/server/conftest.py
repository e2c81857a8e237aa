"""Fixtures for `fgvc server`: a small competition on SQLite and on a real PostgreSQL, a movable clock,
an in-process client, a live Uvicorn server in a thread, and a real server process.

PostgreSQL comes from ``FGVC_TEST_POSTGRES_URL`` (``.ci/run`` installs and starts it, and sets the
variable); every test gets a schema of its own, dropped afterwards. Without the variable the
PostgreSQL cases skip, saying so.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed: pip install 'fgvc[server]'")
pytest.importorskip("sqlalchemy", reason="the server extra is not installed: pip install 'fgvc[server]'")

from fgvc.server import store  # noqa: E402
from fgvc.server.competition import CompetitionCache, create_competition  # noqa: E402
from fgvc.server.runner import open_database  # noqa: E402
from fgvc.server.security import hash_token, new_token  # noqa: E402
from fgvc.server.service import CompetitionService  # noqa: E402

POSTGRES_ENV = "FGVC_TEST_POSTGRES_URL"
REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2027, 1, 10, 12, 0, tzinfo=timezone.utc)
DEADLINE = datetime(2027, 1, 15, 23, 59, tzinfo=timezone.utc)
CLASSES = ["00001", "00002", "00003", "04654"]
# 12 public and 16 private images; see Comp.body for the scores a body gets
N_IMAGES, N_PUBLIC = 28, 12


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """A proxy from the environment would swallow requests meant for 127.0.0.1."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


# -- databases ----------------------------------------------------------------------------------------
def _postgres_base() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


class PostgresSchema:
    """A fresh schema in the test database; the URL selects it through ``search_path``."""

    def __init__(self, base: str) -> None:
        from sqlalchemy import create_engine, text

        self.name = f"t_{secrets.token_hex(6)}"
        self.engine = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
        with self.engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.name}"'))
        self.url = f"{base}{'&' if '?' in base else '?'}options={quote(f'-csearch_path={self.name}')}"

    def drop(self) -> None:
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{self.name}" CASCADE'))
        self.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request):
    """None (SQLite in COMP_DIR, the default) or the URL of a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield None
        return
    base = _postgres_base()
    if base is None:
        pytest.skip(f"PostgreSQL not available: set {POSTGRES_ENV} (`.ci/run` installs Debian's postgresql, starts "
                    "a cluster and sets it)")
    schema = PostgresSchema(base)
    try:
        yield schema.url
    finally:
        schema.drop()


# -- the competition ----------------------------------------------------------------------------------
class Clock:
    """The server's clock, moved by the test."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Comp:
    directory: Path
    labels: dict[str, str]
    public: list[str]
    private: list[str]
    db_url: str | None

    def body(self, team: str | None, public_right: int = 6, private_right: int = 13, **extra) -> dict:
        """A valid submission with ``public_right`` of 12 public and ``private_right`` of 16 private right.

        The defaults score 0.5 public and 0.8125 private (0.6785714... overall): numbers that would
        stand out in any reply that leaked them."""
        images = {}
        for files, right in ((self.public, public_right), (self.private, private_right)):
            for i, name in enumerate(files):
                true = self.labels[name]
                images[name] = true if i < right else next(c for c in CLASSES if c != true)
        body: dict = {"images": images}
        if team is not None:
            body["groupname"] = team
        body.update(extra)
        return body


def make_comp(tmp_path: Path, db_url: str | None, **settings) -> Comp:
    labels = {f"{i:04d}-{secrets.token_hex(2)}.jpg": CLASSES[i % len(CLASSES)] for i in range(N_IMAGES)}
    csv_path = tmp_path / "test_labels.csv"
    csv_path.write_text("file,class_id\n" + "".join(f"{f},{c}\n" for f, c in labels.items()), encoding="utf-8")
    classes = tmp_path / "class_labels.txt"
    classes.write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES)), encoding="utf-8")
    options = dict(public_fraction=N_PUBLIC / N_IMAGES, daily_limit=5, deadline=DEADLINE, title="Birds <2027>",
                   seed=3, now=NOW)
    options.update(settings)
    competition = create_competition(tmp_path / "comp", csv_path, classes_path=classes, db_url=db_url, **options)
    public = sorted(competition.public_files)
    private = sorted(set(labels) - set(public))
    assert len(public) == N_PUBLIC
    return Comp(tmp_path / "comp", labels, public, private, db_url)


@pytest.fixture
def comp(tmp_path, db_url) -> Comp:
    return make_comp(tmp_path, db_url)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def add_team(service: CompetitionService, name: str) -> str:
    token = new_token()
    store.add_team(service.db, name, hash_token(token), service.clock())
    return token


@pytest.fixture
def make_service(clock):
    made = []

    def make(comp: Comp, **options) -> CompetitionService:
        cache = CompetitionCache(comp.directory)
        service = CompetitionService(cache, open_database(cache, None), clock=clock, **options)
        made.append(service)
        return service

    yield make
    for service in made:
        service.db.dispose()


@pytest.fixture
def service(comp, make_service) -> CompetitionService:
    return make_service(comp)


@pytest.fixture
def client(service):
    from starlette.testclient import TestClient

    from fgvc.server.app import create_app

    with TestClient(create_app(service), raise_server_exceptions=False) as test_client:
        yield test_client


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


# -- live servers -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """Uvicorn serving an app on a free port, in a thread of the test process (the clock stays injectable)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the live server did not start")
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live():
    started = []

    def start(service: CompetitionService, **options) -> LiveServer:
        from fgvc.server.app import create_app

        server = LiveServer(create_app(service, **options))
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


class ServerProcess:
    """`python -m fgvc server run` as a real process; ready when /healthz answers."""

    def __init__(self, comp_dir: Path, *args: str, env: dict[str, str] | None = None, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        full_env = {k: v for k, v in os.environ.items() if k != "FGVC_SERVER_FAULT"}
        full_env.update(env or {})
        self.log = log.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "fgvc", "server", "run", str(comp_dir), "--port",
                                         str(self.port), *args], stdout=self.log, stderr=subprocess.STDOUT,
                                        env=full_env, cwd=REPO)
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if get_json(self.url + "/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after 60 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> int:
        terminate(self.process)
        self.log.close()
        return self.process.returncode


@pytest.fixture
def server_process(tmp_path):
    started = []

    def start(comp_dir: Path, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
        server = ServerProcess(comp_dir, *args, env=env, log=tmp_path / "server.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def terminate(process: subprocess.Popen) -> None:
    """Stop a background process: SIGTERM, then SIGKILL if it has not exited within 20 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _json_request(method: str, url: str, body: bytes | None, headers: dict[str, str] | None,
                  timeout: float) -> tuple[int, dict]:
    """One request on a fresh connection; (status, JSON reply). Raises OSError when no reply comes."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                     headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    except http.client.HTTPException as e:  # e.g. IncompleteRead: the server died while writing this reply
        raise ConnectionError(f"no complete reply from {url}: {e!r}") from e
    finally:
        conn.close()


def post(url: str, body: bytes | str, headers: dict[str, str] | None = None,
         timeout: float = 30) -> tuple[int, dict]:
    return _json_request("POST", url, body.encode() if isinstance(body, str) else body, headers, timeout)


def get_json(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, dict]:
    return _json_request("GET", url, None, headers, timeout)


def after_deadline() -> datetime:
    return DEADLINE + timedelta(minutes=1)
