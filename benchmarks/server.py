"""`fgvc server` under a deadline rush, a kill -9 in the middle of one, and a quota race; SQLite and PostgreSQL.

    python benchmarks/server.py [--db sqlite postgresql] [--teams 40] [--per-team 5] [--images 5794]
                                [--classes 200] [--clients 16] [--kill-at 100] [--postgres URL]
                                [--skip rush kill quota hostile]

Each run builds a synthetic competition (CUB's 5,794 test images, 200 classes, UUID file names), adds
the teams, starts a real server process (`python -m fgvc server run`) and sends every submission from
``--clients`` threads at once, each with its team's token and an idempotency key, as `fgvc submit`
does. Then it checks the database: every submission stored exactly once and scored, every 2xx reply's
score equal to the stored one, no 5xx.

Phases, per database:
  rush   all submissions as fast as the clients go; p50/p95 latency, scored submissions per second.
  kill   the same rush with the server SIGKILLing itself right after the durable write of submission
         ``--kill-at`` (FGVC_SERVER_FAULT), a restart, and every client that got no reply retrying with
         the same key: nothing lost, nothing counted twice.
  quota  one team with 5 submissions left sends 16 at once: exactly 5 accepted.
  hostile  the rush again while 50 idle connections (half with unfinished headers) and 20 uploads without a
         token (16 MB declared, all but its last byte sent, then silence) are held open, reopened whenever the
         server closes them, and 3 other teams send the largest invalid body the server parses, without pause:
         p95 of the valid submissions, the server's memory (RSS, sampled), 0 lost, 0 5xx.

PostgreSQL: ``--postgres URL`` or $FGVC_TEST_POSTGRES_URL (``.ci/run`` sets it); each phase gets a
schema of its own, dropped afterwards. Results print as Markdown (paste into BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import queue
import random
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from fgvc.competition.client import idempotency_key
from fgvc.server import store
from fgvc.server.competition import create_competition, utc_now
from fgvc.server.db import Database
from fgvc.server.security import hash_token, new_token

ROOT = Path(__file__).resolve().parents[1]


# -- the competition ----------------------------------------------------------------------------------
@dataclass
class Setup:
    comp_dir: Path
    db_url: str
    tokens: dict[str, str]
    labels: dict[str, str]
    classes: list[str]


def make_competition(work: Path, db_url: str | None, *, teams: int, images: int, classes: int,
                     daily_limit: int) -> Setup:
    rng = random.Random(0)
    files = [f"{uuid.UUID(int=rng.getrandbits(128), version=4)}.jpg" for _ in range(images)]
    class_ids = [f"{4600 + i:05d}" for i in range(classes)]
    labels = {f: rng.choice(class_ids) for f in files}
    work.mkdir(parents=True, exist_ok=True)
    (work / "labels.csv").write_text("file,class_id\n" + "".join(f"{f},{c}\n" for f, c in labels.items()))
    comp_dir = work / "comp"
    competition = create_competition(comp_dir, work / "labels.csv", daily_limit=daily_limit, seed=1,
                                     title="rush", db_url=db_url)
    db = Database(competition.database_url)
    db.ensure_schema(competition.competition_id)
    tokens = {}
    for i in range(teams):
        token = new_token()
        store.add_team(db, f"team-{i:02d}", hash_token(token), utc_now())
        tokens[f"team-{i:02d}"] = token
    db.dispose()
    return Setup(comp_dir, competition.database_url, tokens, labels, class_ids)


def bodies_for(setup: Setup, per_team: int) -> list[tuple[str, bytes]]:
    """(team, body): each team has a skill; every submission a different random guess at it."""
    rng = random.Random(1)
    out = []
    for t, team in enumerate(setup.tokens):
        skill = 0.3 + 0.6 * t / max(1, len(setup.tokens) - 1)
        for _ in range(per_team):
            images = {f: c if rng.random() < skill else rng.choice(setup.classes) for f, c in setup.labels.items()}
            out.append((team, json.dumps({"images": images, "groupname": team}).encode()))
    rng.shuffle(out)
    return out


# -- the server process -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, setup: Setup, log: Path, fault: str | None = None) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "FGVC_SERVER_FAULT"}
        if fault:
            env["FGVC_SERVER_FAULT"] = fault
        self.log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fgvc", "server", "run", str(setup.comp_dir), "--port", str(self.port),
             "--db", setup.db_url], stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; see {log}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after 60 s; see {log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def tally(outcomes: list) -> tuple[list[float], dict[str, int]]:
    """Latencies of the accepted submissions and a count of every status (as a string, for the JSON)."""
    return [o.latency for o in outcomes if o.status == 200], dict(Counter(str(o.status) for o in outcomes))


# -- the clients --------------------------------------------------------------------------------------
@dataclass
class Outcome:
    team: str
    key: str
    status: int | None = None  # None: no reply (connection refused/reset)
    reply: dict = field(default_factory=dict)
    latency: float = 0.0


def post_all(port: int, jobs: list[tuple[str, bytes]], tokens: dict[str, str], clients: int) -> list[Outcome]:
    """Send every job from ``clients`` threads, each on its own keep-alive connection."""
    work: queue.Queue = queue.Queue()
    for job in jobs:
        work.put(job)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        start.wait()
        while True:
            try:
                team, body = work.get_nowait()
            except queue.Empty:
                break
            outcome = Outcome(team, idempotency_key(body))
            t = time.perf_counter()
            try:
                conn.request("POST", "/api/submissions", body=body,
                             headers={"Authorization": f"Bearer {tokens[team]}", "Idempotency-Key": outcome.key,
                                      "Content-Type": "application/json"})
                response = conn.getresponse()
                raw = response.read()
                outcome.status, outcome.reply = response.status, json.loads(raw)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            outcome.latency = time.perf_counter() - t
            with lock:
                outcomes.append(outcome)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to tell the server's own cost from a busy machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc); 0 where unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssSampler:
    """The peak resident memory of a process, sampled every 50 ms from a thread while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, rss_bytes(pid), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- checks -------------------------------------------------------------------------------------------
def check_database(setup: Setup, expected_keys: set[tuple[str, str]], replies: list[Outcome]) -> dict:
    """Every expected (team, key) stored once and scored; every 2xx reply's score is the stored one."""
    db = Database(setup.db_url)
    rows = store.all_submissions(db)
    from sqlalchemy import select

    from fgvc.server.db import Submission, Team

    with db.read() as conn:
        keys = conn.execute(select(Team.name, Submission.idempotency_key, Submission.id)
                            .join(Team, Team.id == Submission.team_id)).all()
    db.dispose()
    stored = {(name, key): sid for name, key, sid in keys}
    by_id = {r.id: r for _, r in rows}
    lost = [k for k in expected_keys if k not in stored]
    duplicated = len(keys) - len(set((n, k) for n, k, _ in keys))
    unscored = [r.id for _, r in rows if r.status != "scored"]
    mismatched = [o for o in replies if o.status == 200 and (
        o.reply["submission_id"] not in by_id or by_id[o.reply["submission_id"]].public_score != o.reply["accuracy"])]
    return {"stored": len(rows), "lost": len(lost), "duplicated": duplicated, "unscored": len(unscored),
            "reply_mismatch": len(mismatched)}


# -- phases -------------------------------------------------------------------------------------------
def rush(setup: Setup, work: Path, args) -> dict:
    jobs = bodies_for(setup, args.per_team)
    load_before = os.getloadavg()[0]  # other work on the machine: the server's share of the CPU depends on it
    server = ServerProcess(setup, work / "server.log")
    try:
        cpu_before = process_cpu_seconds(server.process.pid)
        t = time.perf_counter()
        with RssSampler(server.process.pid) as sampler:
            outcomes = post_all(server.port, jobs, setup.tokens, args.clients)
        wall = time.perf_counter() - t
        cpu = process_cpu_seconds(server.process.pid) - cpu_before
    finally:
        server.stop()
    latencies, statuses = tally(outcomes)
    checks = check_database(setup, {(team, idempotency_key(body)) for team, body in jobs}, outcomes)
    return {"submissions": len(jobs), "wall_s": wall, "per_s": len(latencies) / wall,
            "server_cpu_ms": 1000 * cpu / len(jobs), "load_before": load_before,
            "p50_s": statistics.median(latencies), "p95_s": percentile(latencies, 0.95),
            "max_s": max(latencies), "statuses": statuses, "rss_peak_mb": sampler.peak / (1024 * 1024),
            "body_kb": sum(len(b) for _, b in jobs) / len(jobs) / 1024, **checks}


def kill_rush(setup: Setup, work: Path, args) -> dict:
    jobs = bodies_for(setup, args.per_team)
    server = ServerProcess(setup, work / "server-kill.log", fault=f"kill-after-store:{args.kill_at}")
    try:
        first = post_all(server.port, jobs, setup.tokens, args.clients)
        server.process.wait(timeout=60)
        killed_rc = server.process.returncode
    finally:
        server.stop()
    answered = [o for o in first if o.status is not None]
    unanswered = {(o.team, o.key) for o in first if o.status is None}
    retry_jobs = [(team, body) for team, body in jobs if (team, idempotency_key(body)) in unanswered]
    server = ServerProcess(setup, work / "server-kill.log")
    try:
        second = post_all(server.port, retry_jobs, setup.tokens, args.clients)
    finally:
        server.stop()
    replayed = sum(1 for o in second if o.reply.get("replayed"))
    checks = check_database(setup, {(team, idempotency_key(body)) for team, body in jobs}, answered + second)
    statuses: dict[str, int] = {}
    for o in first + second:
        statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
    return {"submissions": len(jobs), "killed_rc": killed_rc, "answered_before_kill": len(answered),
            "retried": len(retry_jobs), "retries_replayed": replayed, "statuses": statuses, **checks}


def quota_race(setup: Setup, work: Path, args) -> dict:
    team = next(iter(setup.tokens))
    images = dict(setup.labels)
    jobs = []
    for i in range(16):  # 16 different files, so that no idempotency key repeats
        images[next(iter(images))] = setup.classes[i % len(setup.classes)]
        jobs.append((team, json.dumps({"images": dict(images), "groupname": team}).encode()))
    server = ServerProcess(setup, work / "server-quota.log")
    try:
        outcomes = post_all(server.port, jobs, setup.tokens, 16)
    finally:
        server.stop()
    statuses: dict[str, int] = {}
    for o in outcomes:
        statuses[str(o.status)] = statuses.get(str(o.status), 0) + 1
    return {"sent": len(jobs), "statuses": statuses}


# -- the hostile phase --------------------------------------------------------------------------------
STALLED_DECLARED = 16 * 1024 * 1024  # the largest body the server accepts by default


class StalledClients:
    """50 idle connections (every other one with unfinished headers) and 20 token-less 16 MB uploads stalled one
    byte short, held open from a thread; one the server closes (its timeouts) is opened again at once."""

    def __init__(self, port: int, idle: int = 50, uploads: int = 20) -> None:
        self.port, self.closed_by_server, self._stop = port, 0, threading.Event()
        self.early_401 = 0  # uploads answered 401 before their body was sent
        self.kinds = ["idle", "partial"] * (idle // 2) + ["idle"] * (idle % 2) + ["upload"] * uploads
        self.socks = [self._open(kind) for kind in self.kinds]
        self._thread = threading.Thread(target=self._keep, daemon=True)
        self._thread.start()

    def _open(self, kind: str) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        if kind == "partial":
            sock.sendall(b"POST /api/submissions HTTP/1.1\r\nHost: fgvc\r\nContent-Le")
        elif kind == "upload":
            sock.sendall(f"POST /api/submissions HTTP/1.1\r\nHost: fgvc\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {STALLED_DECLARED}\r\n\r\n".encode())
            try:
                if sock.recv(65536).startswith(b"HTTP/1.1 401"):
                    self.early_401 += 1
            except TimeoutError:  # a server that waits for the body before it answers
                pass
            sock.sendall(b" " * (STALLED_DECLARED - 1))
        sock.setblocking(False)
        return sock

    def _keep(self) -> None:
        import select

        while not self._stop.wait(0.2):
            readable, _, _ = select.select(self.socks, [], [], 0)
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # closed by the server: a persistent attacker comes back
                    i = self.socks.index(sock)
                    sock.close()
                    self.closed_by_server += 1
                    if not self._stop.is_set():
                        try:
                            self.socks[i] = self._open(self.kinds[i])
                        except OSError:
                            self.socks[i] = socket.socket()  # refused now; this slot stays empty

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.socks:
            sock.close()


def maximal_invalid_body(setup: Setup, team: str) -> bytes:
    """The largest body the server still parses (its per-competition bound), every name and class unknown:
    the most checking work one request can ask for."""
    from fgvc.server.competition import CompetitionCache

    limit = CompetitionCache(setup.comp_dir).current().max_body_bytes
    images, size, i = {}, 64, 0
    while True:
        name, value = f"{uuid.UUID(int=i, version=4)}.jpg", f"9{i:07d}"
        size += len(name) + len(value) + 8
        if size > limit:
            break
        images[name], i = value, i + 1
    return json.dumps({"images": images, "groupname": team}).encode()


def hammer(port: int, team: str, token: str, body: bytes, stop: threading.Event, statuses: dict, lock) -> None:
    """One team sending its invalid body again and again, ignoring Retry-After, until ``stop``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    n = 0
    while not stop.is_set():
        n += 1
        try:
            conn.request("POST", "/api/submissions", body=body,
                         headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"{team}-bad-{n}",
                                  "Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            status = str(response.status)
        except (OSError, http.client.HTTPException):
            status = "None"
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        with lock:
            statuses[status] = statuses.get(status, 0) + 1
    conn.close()


def hostile(setup: Setup, work: Path, args) -> dict:
    attackers = list(setup.tokens)[-3:]
    honest = Setup(setup.comp_dir, setup.db_url, {t: k for t, k in setup.tokens.items() if t not in attackers},
                   setup.labels, setup.classes)
    jobs = bodies_for(honest, args.per_team)
    server = ServerProcess(setup, work / "server-hostile.log")
    bad_statuses: dict[str, int] = {}
    lock, stop = threading.Lock(), threading.Event()
    try:
        rss_idle = rss_bytes(server.process.pid)
        bad_bodies = {team: maximal_invalid_body(setup, team) for team in attackers}
        with RssSampler(server.process.pid) as sampler:
            stalled = StalledClients(server.port)
            rss_stalled = rss_bytes(server.process.pid)
            threads = [threading.Thread(target=hammer, args=(server.port, team, setup.tokens[team], bad_bodies[team],
                                                             stop, bad_statuses, lock)) for team in attackers]
            for thread in threads:
                thread.start()
            t = time.perf_counter()
            outcomes = post_all(server.port, jobs, honest.tokens, args.clients)
            wall = time.perf_counter() - t
            stop.set()
            for thread in threads:
                thread.join()
            stalled.close()
    finally:
        server.stop()
    latencies, statuses = tally(outcomes)
    checks = check_database(setup, {(team, idempotency_key(body)) for team, body in jobs}, outcomes)
    five = sum(n for s, n in (*statuses.items(), *bad_statuses.items()) if s.startswith("5"))
    mib = 1024 * 1024
    return {"submissions": len(jobs), "wall_s": wall, "p50_s": statistics.median(latencies),
            "p95_s": percentile(latencies, 0.95), "max_s": max(latencies), "statuses": statuses,
            "invalid_statuses": bad_statuses, "invalid_body_mb": max(map(len, bad_bodies.values())) / mib,
            "rss_idle_mb": rss_idle / mib, "rss_with_stalled_mb": rss_stalled / mib, "rss_peak_mb": sampler.peak / mib,
            "stalled_uploads_401_before_body": stalled.early_401, "stalled_closed_by_server": stalled.closed_by_server,
            "five_xx": five, **checks}


# -- PostgreSQL schemas -------------------------------------------------------------------------------
class PostgresSchema:
    """A fresh schema in the given database, addressed through ``search_path`` in the URL."""

    def __init__(self, base_url: str) -> None:
        from sqlalchemy import create_engine, text

        self.name = f"bench_{secrets.token_hex(4)}"
        self.engine = create_engine(base_url.replace("postgresql://", "postgresql+psycopg://", 1)
                                    if base_url.startswith("postgresql://") else base_url)
        with self.engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.name}"'))
        separator = "&" if "?" in base_url else "?"
        self.url = f"{base_url}{separator}options={quote(f'-csearch_path={self.name}')}"

    def drop(self) -> None:
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{self.name}" CASCADE'))
        self.engine.dispose()


def run_phase(name: str, db_kind: str, args, fn, extra_teams: int = 0, **competition) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"fgvc-bench-{name}-") as tmp:
        schema = PostgresSchema(args.postgres) if db_kind == "postgresql" else None
        try:
            setup = make_competition(Path(tmp), schema.url if schema else None, teams=args.teams + extra_teams,
                                     images=args.images, classes=args.classes, **competition)
            return fn(setup, Path(tmp), args)
        finally:
            if schema:
                schema.drop()


def postgres_version(url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1)
                           if url.startswith("postgresql://") else url)
    with engine.connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar()
    engine.dispose()
    return str(version)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", nargs="+", choices=["sqlite", "postgresql"], default=None,
                        help="databases to measure (default: sqlite, and postgresql when a URL is known)")
    parser.add_argument("--postgres", default=os.environ.get("FGVC_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL (default: $FGVC_TEST_POSTGRES_URL)")
    parser.add_argument("--teams", type=int, default=40)
    parser.add_argument("--per-team", type=int, default=5)
    parser.add_argument("--images", type=int, default=5794)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--kill-at", type=int, default=100, help="the stored submission after which the server dies")
    parser.add_argument("--skip", nargs="*", default=[], choices=["rush", "kill", "quota", "hostile"])
    args = parser.parse_args()
    databases = args.db or (["sqlite", "postgresql"] if args.postgres else ["sqlite"])
    if "postgresql" in databases and not args.postgres:
        parser.error("--db postgresql needs --postgres URL or $FGVC_TEST_POSTGRES_URL")

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}"
          + (f", PostgreSQL {postgres_version(args.postgres)}" if "postgresql" in databases else ""))
    print(f"rush: {args.teams} teams x {args.per_team} submissions of {args.images} images, {args.clients} "
          "concurrent clients, one server process\n")
    results = {}
    for db_kind in databases:
        if "rush" not in args.skip:
            results[(db_kind, "rush")] = r = run_phase("rush", db_kind, args, rush, daily_limit=args.per_team)
            print(f"{db_kind} rush: {json.dumps(r)}", flush=True)
        if "kill" not in args.skip:
            results[(db_kind, "kill")] = r = run_phase("kill", db_kind, args, kill_rush, daily_limit=args.per_team)
            print(f"{db_kind} kill: {json.dumps(r)}", flush=True)
        if "quota" not in args.skip:
            results[(db_kind, "quota")] = r = run_phase("quota", db_kind, args, quota_race, daily_limit=5)
            print(f"{db_kind} quota: {json.dumps(r)}", flush=True)
        if "hostile" not in args.skip:
            results[(db_kind, "hostile")] = r = run_phase("hostile", db_kind, args, hostile,
                                                          daily_limit=args.per_team, extra_teams=3)
            print(f"{db_kind} hostile: {json.dumps(r)}", flush=True)

    print("\n| database | submissions | wall (s) | scored/s | p50 (s) | p95 (s) | max (s) | server CPU per submission "
          "(ms) | replies | stored | lost | duplicated | unscored | 5xx | load avg before |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (db_kind, phase), r in results.items():
        if phase == "rush":
            five = sum(n for s, n in r["statuses"].items() if s.startswith("5"))
            replies = ", ".join(f"{n} x {s}" for s, n in sorted(r["statuses"].items()))
            print(f"| {db_kind} | {r['submissions']} | {r['wall_s']:.2f} | {r['per_s']:.1f} | {r['p50_s']:.3f} | "
                  f"{r['p95_s']:.3f} | {r['max_s']:.3f} | {r['server_cpu_ms']:.1f} | {replies} | {r['stored']} | "
                  f"{r['lost']} | {r['duplicated']} | {r['unscored']} | {five} | {r['load_before']:.1f} |")
    kills = [(k, r) for k, r in results.items() if k[1] == "kill"]
    if kills:
        print("\n| database | kill -9 after stored submission | answered before | retried after restart | "
              "retries answered from the first result | stored | lost | duplicated | unscored |")
        print("|---|---|---|---|---|---|---|---|---|")
        for (db_kind, _), r in kills:
            print(f"| {db_kind} | {args.kill_at} (exit {r['killed_rc']}) | {r['answered_before_kill']} | "
                  f"{r['retried']} | {r['retries_replayed']} | {r['stored']} | {r['lost']} | {r['duplicated']} | "
                  f"{r['unscored']} |")
    hostiles = [(k, r) for k, r in results.items() if k[1] == "hostile"]
    if hostiles:
        print("\n| database | valid submissions | p50 (s) | p95 (s) | max (s) | valid replies | invalid bodies sent "
              "(size, replies) | server RSS idle / with stalled / peak (MiB) | stalled closed by the server | lost | "
              "duplicated | 5xx |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for (db_kind, _), r in hostiles:
            replies = ", ".join(f"{n} x {s}" for s, n in sorted(r["statuses"].items()))
            bad = ", ".join(f"{n} x {s}" for s, n in sorted(r["invalid_statuses"].items()))
            print(f"| {db_kind} | {r['submissions']} | {r['p50_s']:.3f} | {r['p95_s']:.3f} | {r['max_s']:.3f} | "
                  f"{replies} | {r['invalid_body_mb']:.1f} MiB: {bad} | {r['rss_idle_mb']:.0f} / "
                  f"{r['rss_with_stalled_mb']:.0f} / {r['rss_peak_mb']:.0f} | {r['stalled_closed_by_server']} | "
                  f"{r['lost']} | {r['duplicated']} | {r['five_xx']} |")
    for (db_kind, phase), r in results.items():
        if phase == "quota":
            print(f"\nquota race ({db_kind}): 16 parallel submissions of one team with 5 left -> {r['statuses']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
