"""The database: two tables (teams, submissions), one engine per URL, schema creation and migration.

SQLite (the embedded default) runs in WAL mode with ``synchronous=FULL``: a commit is on disk when it
returns, so a submission that got a 2xx reply survives ``kill -9`` and a power cut. Write
transactions start with ``BEGIN IMMEDIATE`` (the write lock is taken at the start, so two writers
never deadlock halfway) and, inside one server process, also hold a lock so that writers queue in
Python instead of polling SQLite's busy handler. PostgreSQL needs neither: quota races are settled by
a row lock on the team (``SELECT ... FOR UPDATE``) and, in both databases, by unique constraints.

Schema versions: ``fgvc_meta.schema_version``; :data:`MIGRATIONS` upgrades an older database in
order when a server or command opens it; a newer one is refused rather than misread.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from datetime import datetime

from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..errors import ConfigError, UserError

__all__ = ["Base", "Database", "Meta", "Submission", "SubmissionBody", "Team", "SCHEMA_VERSION", "MIGRATIONS",
           "normalise_url"]

SCHEMA_VERSION = 1
TEAM_NAME_MAX = 100
IDEMPOTENCY_KEY_MAX = 128


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value facts about the database itself (the schema version)."""

    __tablename__ = "fgvc_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(256))


class Team(Base):
    """A team; ``token_hash`` is the SHA-256 of its token (None: open-mode team without a token)."""

    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(TEAM_NAME_MAX), unique=True)
    token_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Submission(Base):
    """One accepted submission: its body (see :class:`SubmissionBody`), then its scores.

    ``status`` is 'pending' between the durable write of the body and the write of its scores (a crash
    in between is scored at the next start), 'scored' after, 'invalid' when a rescore found the stored
    body no longer valid. ``(team_id, quota_day, slot)`` is unique: the n-th submission of a team on a
    UTC day takes slot n, so two racing requests can never both take the last slot.
    """

    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime)  # UTC, naive
    quota_day: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD, UTC
    slot: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(IDEMPOTENCY_KEY_MAX))
    body_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    public_score: Mapped[float | None] = mapped_column(Float)
    private_score: Mapped[float | None] = mapped_column(Float)
    overall_score: Mapped[float | None] = mapped_column(Float)
    labels_version: Mapped[str | None] = mapped_column(String(64))
    scored_at: Mapped[datetime | None] = mapped_column(DateTime)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("team_id", "quota_day", "slot", name="uq_submissions_quota_slot"),
        UniqueConstraint("team_id", "idempotency_key", name="uq_submissions_idempotency_key"),
        Index("ix_submissions_status_team_score", "status", "team_id", "public_score"),
    )


class SubmissionBody(Base):
    """The body of a submission as compact canonical JSON (sorted keys, no spaces, only 'images' and
    'groupname'; rows stored by earlier versions hold the body as received), written in the same
    transaction as its row.

    A table of its own keeps the submissions rows small: SQLite stores a row's columns in order, and
    reading a score stored after a 300 KB body would walk the body's overflow pages every time."""

    __tablename__ = "submission_bodies"
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), primary_key=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {}
"""``{n: upgrade from version n-1 to n}``, run in order inside one transaction; version 1 is the first."""


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 (the driver the ``server`` extra installs); check the URL early."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError:
        raise ConfigError(f"--db {url!r} is not a database URL; use sqlite:///PATH or "
                          "postgresql+psycopg://USER@HOST/DB") from None
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"--db {backend!r} is not supported; use SQLite (sqlite:///PATH) or PostgreSQL "
                          "(postgresql+psycopg://USER@HOST/DB)")
    return url


def _private_sqlite_files(path: str | None) -> None:
    """Make the database file and its -wal and -shm companions readable by their owner only (0600).

    SQLite creates -wal and -shm with the database file's permissions, so a file created 0600 before
    SQLite first opens it keeps all three private whatever the umask; files an older fgvc made 0644 are
    tightened here. A path SQLite cannot use either is left for SQLite's own error."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))
    except OSError:
        return
    for name in (path, path + "-wal", path + "-shm"):
        with contextlib.suppress(OSError):  # absent yet, or another user's file: SQLite decides
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)


def _sqlite_engine(url: str) -> Engine:
    _private_sqlite_files(make_url(url).database)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                           pool_size=8, max_overflow=8, pool_timeout=60)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's BEGIN, not pysqlite's implicit one
        cursor = dbapi_connection.cursor()
        # synchronous=FULL is the default of every write transaction (see _on_begin); reads never write
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=30000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("fgvc_write", False):
            sync = "FULL" if options.get("fgvc_durable", True) else "NORMAL"
            if conn.info.get("fgvc_synchronous") != sync:  # per DBAPI connection; set only when it changes
                conn.exec_driver_sql(f"PRAGMA synchronous={sync}")
                conn.info["fgvc_synchronous"] = sync
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


class Database:
    """An engine plus the two kinds of transaction the server uses: short writes and consistent reads."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        try:
            if self.is_sqlite:
                self.engine = _sqlite_engine(self.url)
            else:
                self.engine = create_engine(self.url, pool_size=10, max_overflow=10, pool_pre_ping=True,
                                            pool_timeout=60)
        except (ArgumentError, NoSuchModuleError) as e:
            raise ConfigError(f"--db {self.safe_url}: {e}") from None
        self._write_lock = threading.Lock() if self.is_sqlite else None

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages and logs."""
        return make_url(self.url).render_as_string(hide_password=True)

    @contextlib.contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Connection]:
        """One write transaction, committed when the block ends.

        ``durable``: on disk when the commit returns (SQLite ``synchronous=FULL``); else (``NORMAL``,
        WAL) it survives a killed process but maybe not a power cut: for what can be recomputed."""
        with self._write_lock or contextlib.nullcontext(), self.engine.connect() as conn:
            conn.execution_options(fgvc_write=True, fgvc_durable=durable)
            with conn.begin():
                if not self.is_sqlite and not durable:
                    conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")  # this transaction only
                yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot for a page or a reply."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def probe_write(self, moment: str) -> None:
        """A real, durable write (the readiness check): a database that answers reads but refuses writes
        (full disk, read-only file, lost primary) fails here as every submission would."""
        table = Meta.__table__
        with self.write() as conn:
            if not conn.execute(table.update().where(table.c.key == "ready_probe").values(value=moment)).rowcount:
                conn.execute(table.insert().values(key="ready_probe", value=moment))

    def dispose(self) -> None:
        self.engine.dispose()

    def claimed_by(self) -> str | None:
        """The id of the competition this database serves, None for a new database."""
        with self.read() as conn:
            if not inspect(conn).has_table(Meta.__tablename__):
                return None
            return conn.execute(select(Meta.value).where(Meta.key == "competition_id")).scalar()

    def ensure_schema(self, competition_id: str | None = None) -> None:
        """Create the tables of a new database, or migrate an older one to :data:`SCHEMA_VERSION`.

        ``competition_id`` is recorded on first use and checked afterwards, so that a --db pointing at
        another competition's database is refused instead of mixing two competitions' teams."""
        try:
            with self.write() as conn:
                if not self.is_sqlite:  # two processes starting at once must not both create tables
                    conn.execute(text("SELECT pg_advisory_xact_lock(7301)"))
                version = _stored_version(conn)
                if version is not None and version > SCHEMA_VERSION:
                    raise UserError(f"the database {self.safe_url} has schema version {version}, newer than this "
                                    f"fgvc's {SCHEMA_VERSION}; upgrade fgvc to serve it")
                for step in range((version or SCHEMA_VERSION) + 1, SCHEMA_VERSION + 1):
                    MIGRATIONS[step](conn)
                Base.metadata.create_all(conn)
                _store_version(conn, SCHEMA_VERSION, insert=version is None)
                if competition_id is not None:
                    _claim(conn, competition_id, self.safe_url)
        except OperationalError as e:
            raise UserError(f"cannot open the database {self.safe_url}: {str(e.orig).strip() or e}") from None


def _stored_version(conn: Connection) -> int | None:
    if not inspect(conn).has_table(Meta.__tablename__):
        return None
    value = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
    return int(value) if value is not None else None


def _store_version(conn: Connection, version: int, *, insert: bool) -> None:
    table = Meta.__table__
    if insert:
        conn.execute(table.insert().values(key="schema_version", value=str(version)))
    else:
        conn.execute(table.update().where(table.c.key == "schema_version").values(value=str(version)))


def _claim(conn: Connection, competition_id: str, url: str) -> None:
    table = Meta.__table__
    owner = conn.execute(select(table.c.value).where(table.c.key == "competition_id")).scalar()
    if owner is None:
        conn.execute(table.insert().values(key="competition_id", value=competition_id))
    elif owner != competition_id:
        raise UserError(f"the database {url} holds another competition's teams and submissions; give each "
                        "competition its own database (or PostgreSQL schema)")
