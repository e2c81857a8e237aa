"""The database layer: schema creation and migration, one competition per database, SQLite durability settings."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from fgvc.errors import ConfigError, UserError
from fgvc.server import db as dbmod
from fgvc.server.competition import CompetitionCache
from fgvc.server.db import Database, Meta, normalise_url
from fgvc.server.runner import open_database


def _version(database: Database) -> str:
    with database.read() as conn:
        return conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar_one()


def test_a_new_database_gets_the_tables_and_the_version(comp):
    database = open_database(CompetitionCache(comp.directory), None)
    try:
        assert _version(database) == str(dbmod.SCHEMA_VERSION)
        assert database.claimed_by() is not None
        database.ensure_schema()  # opening again changes nothing
        assert _version(database) == str(dbmod.SCHEMA_VERSION)
    finally:
        database.dispose()


def test_an_older_database_is_migrated_in_order_and_a_newer_one_refused(comp, monkeypatch):
    database = open_database(CompetitionCache(comp.directory), None)
    try:
        ran = []

        def to_2(conn):
            conn.execute(text("CREATE TABLE fgvc_migration_probe (x INTEGER)"))
            ran.append(2)

        monkeypatch.setattr(dbmod, "SCHEMA_VERSION", 3)
        monkeypatch.setitem(dbmod.MIGRATIONS, 2, to_2)
        monkeypatch.setitem(dbmod.MIGRATIONS, 3, lambda conn: ran.append(3))
        database.ensure_schema()
        assert ran == [2, 3] and _version(database) == "3"
        database.ensure_schema()
        assert ran == [2, 3]  # each step once
        monkeypatch.setattr(dbmod, "SCHEMA_VERSION", 1)
        with pytest.raises(UserError, match="schema version 3, newer than this fgvc's 1"):
            database.ensure_schema()
    finally:
        database.dispose()


def test_a_database_serves_one_competition(comp, tmp_path):
    from .conftest import make_comp

    database = open_database(CompetitionCache(comp.directory), None)
    url = database.url
    database.dispose()
    (tmp_path / "other").mkdir()
    other = make_comp(tmp_path / "other", None)
    with pytest.raises(UserError, match="another competition's teams and submissions"):
        open_database(CompetitionCache(other.directory), url)


def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path):
    from .conftest import make_comp

    comp = make_comp(tmp_path, None)
    database = open_database(CompetitionCache(comp.directory), None)
    try:
        with database.write() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        with database.write(durable=False) as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL: recomputable scores only
    finally:
        database.dispose()


def test_database_urls():
    assert normalise_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="not supported"):
        normalise_url("mysql://u@h/d")
    with pytest.raises(ConfigError, match="not a database URL"):
        normalise_url("nonsense")
    assert "secret" not in Database("postgresql+psycopg://u:secret@127.0.0.1:1/d").safe_url


def test_an_unreachable_database_is_one_line(tmp_path, capsys):
    import socket

    from fgvc.cli import main

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    labels = tmp_path / "l.csv"
    labels.write_text("file,class_id\na.jpg,1\n")
    url = f"postgresql+psycopg://u:secret@127.0.0.1:{port}/d?connect_timeout=2"
    assert main(["server", "init", str(tmp_path / "c"), "--labels", str(labels), "--db", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fgvc: error: cannot open the database postgresql+psycopg://u:***@127.0.0.1")
    assert "secret" not in err and not (tmp_path / "c").exists()
