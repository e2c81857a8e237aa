"""The SQL of teams and submissions, one short transaction per function; parameterised throughout.

Everything here is SQLAlchemy Core expressions (values are bound parameters, never formatted into
SQL). Times are stored as naive UTC and returned aware.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..errors import UserError
from .competition import Scores, quota_day
from .db import Database, Submission, SubmissionBody, Team

__all__ = [
    "QuotaExceeded",
    "StandingRow",
    "Stored",
    "SubmissionRow",
    "TeamRow",
    "add_team",
    "all_submissions",
    "find_by_key",
    "get_or_create_team",
    "ids_needing_scores",
    "list_teams",
    "mark_invalid",
    "quota_used",
    "record_scores",
    "reply_facts",
    "set_team_token",
    "standing_rows",
    "store_submission",
    "stored_body",
    "submission_by_id",
    "team_by_name",
    "team_submissions",
    "teams_and_hashes",
]

_S = Submission.__table__
_T = Team.__table__
_B = SubmissionBody.__table__
_STORE_ATTEMPTS = 64  # each retry follows a unique-constraint loss to a concurrent request; bounded anyway


def _db_time(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


@dataclass(frozen=True)
class TeamRow:
    id: int
    name: str
    has_token: bool


@dataclass(frozen=True)
class SubmissionRow:
    id: int
    team_id: int
    created_at: datetime
    slot: int
    status: str
    body_sha256: str
    public_score: float | None
    private_score: float | None
    overall_score: float | None
    labels_version: str | None
    error: str | None


@dataclass(frozen=True)
class StandingRow:
    """A team with the submission that counts for it (None: nothing scored yet) and its count."""

    team_id: int
    team: str
    submission_id: int | None
    submitted_at: datetime | None
    public_score: float | None
    private_score: float | None
    overall_score: float | None
    submissions: int
    last_submission_at: datetime | None


@dataclass(frozen=True)
class Stored:
    row: SubmissionRow
    replayed: bool  # an earlier submission with the same idempotency key, returned instead of a new one


class QuotaExceeded(Exception):
    def __init__(self, used: int) -> None:
        super().__init__(used)
        self.used = used


_ROW_COLUMNS = (_S.c.id, _S.c.team_id, _S.c.created_at, _S.c.slot, _S.c.status, _S.c.body_sha256, _S.c.public_score,
                _S.c.private_score, _S.c.overall_score, _S.c.labels_version, _S.c.error)


def _submission_row(r) -> SubmissionRow:
    return SubmissionRow(r.id, r.team_id, _aware(r.created_at), r.slot, r.status, r.body_sha256, r.public_score,
                         r.private_score, r.overall_score, r.labels_version, r.error)


# -- teams --------------------------------------------------------------------------------------------
def add_team(db: Database, name: str, token_hash: str | None, now: datetime) -> TeamRow:
    try:
        with db.write() as conn:
            result = conn.execute(_T.insert().values(name=name, token_hash=token_hash, created_at=_db_time(now)))
            team_id = result.inserted_primary_key[0]
    except IntegrityError:
        raise UserError(f"team {name!r} already exists; `fgvc server team token COMP_DIR NAME` gives it a new "
                        "token") from None
    return TeamRow(team_id, name, token_hash is not None)


def set_team_token(db: Database, name: str, token_hash: str) -> TeamRow:
    with db.write() as conn:
        updated = conn.execute(_T.update().where(_T.c.name == name).values(token_hash=token_hash)).rowcount
    if not updated:
        raise UserError(f"no team named {name!r}; add it with `fgvc server team add COMP_DIR NAME`")
    team = team_by_name(db, name)
    assert team is not None
    return team


def team_by_name(db: Database, name: str) -> TeamRow | None:
    with db.read() as conn:
        r = conn.execute(select(_T.c.id, _T.c.name, _T.c.token_hash).where(_T.c.name == name)).first()
    return TeamRow(r.id, r.name, r.token_hash is not None) if r else None


def teams_and_hashes(db: Database) -> list[tuple[TeamRow, str | None]]:
    """Every team with its token hash (for the constant-time comparison against all of them)."""
    with db.read() as conn:
        return [(TeamRow(r.id, r.name, r.token_hash is not None), r.token_hash)
                for r in conn.execute(select(_T.c.id, _T.c.name, _T.c.token_hash))]


def get_or_create_team(db: Database, name: str, now: datetime) -> TeamRow:
    """Open mode: a team is created by its first valid submission; a concurrent first one is fine."""
    team = team_by_name(db, name)
    if team is not None:
        return team
    try:
        return add_team(db, name, None, now)
    except UserError:  # created by a concurrent request in the meantime
        team = team_by_name(db, name)
        assert team is not None
        return team


def list_teams(db: Database) -> list[tuple[TeamRow, int]]:
    counts = select(_S.c.team_id, func.count().label("n")).group_by(_S.c.team_id).subquery()
    query = (select(_T.c.id, _T.c.name, _T.c.token_hash, func.coalesce(counts.c.n, 0).label("n"))
             .select_from(_T.outerjoin(counts, counts.c.team_id == _T.c.id)).order_by(_T.c.name))
    with db.read() as conn:
        return [(TeamRow(r.id, r.name, r.token_hash is not None), r.n) for r in conn.execute(query)]


# -- submissions --------------------------------------------------------------------------------------
def find_by_key(db: Database, team_id: int, key: str) -> SubmissionRow | None:
    with db.read() as conn:
        r = conn.execute(select(*_ROW_COLUMNS).where(_S.c.team_id == team_id, _S.c.idempotency_key == key)).first()
    return _submission_row(r) if r else None


def store_submission(db: Database, team_id: int, *, body: bytes, body_sha256: str, key: str | None,
                     now: datetime, daily_limit: int) -> Stored:
    """Durably store a body as the team's next submission today, or raise :class:`QuotaExceeded`.

    One transaction: lock the team row (PostgreSQL; SQLite's write lock covers it), return the
    earlier submission with the same idempotency key if there is one, count today's submissions,
    insert at slot count + 1. A concurrent request that took the same slot or key first makes the
    insert fail on a unique constraint; the loop then looks again.
    """
    day = quota_day(now)
    for _ in range(_STORE_ATTEMPTS):
        try:
            with db.write() as conn:
                if not db.is_sqlite:  # SQLite's BEGIN IMMEDIATE already holds the database's write lock
                    conn.execute(select(_T.c.id).where(_T.c.id == team_id).with_for_update())
                if key is not None:
                    r = conn.execute(select(*_ROW_COLUMNS).where(_S.c.team_id == team_id,
                                                                 _S.c.idempotency_key == key)).first()
                    if r is not None:
                        return Stored(_submission_row(r), replayed=True)
                used = conn.execute(select(func.count()).select_from(_S).where(_S.c.team_id == team_id,
                                                                              _S.c.quota_day == day)).scalar_one()
                if daily_limit and used >= daily_limit:
                    raise QuotaExceeded(used)
                values = dict(team_id=team_id, created_at=_db_time(now), quota_day=day, slot=used + 1,
                              idempotency_key=key, body_sha256=body_sha256, status="pending")
                new_id = conn.execute(_S.insert().values(**values)).inserted_primary_key[0]
                conn.execute(_B.insert().values(submission_id=new_id, body=body))
            return Stored(SubmissionRow(new_id, team_id, _aware(_db_time(now)), used + 1, "pending", body_sha256,
                                        None, None, None, None, None), replayed=False)
        except IntegrityError:
            continue
    raise RuntimeError(f"could not store a submission of team {team_id} after {_STORE_ATTEMPTS} attempts")


def record_scores(db: Database, submission_id: int, scores: Scores, labels_version: str, now: datetime) -> None:
    """Write a submission's scores. Not fsynced: the body is, and a score lost to a power cut is
    recomputed from it at the next start (the row is still 'pending' then)."""
    with db.write(durable=False) as conn:
        conn.execute(_S.update().where(_S.c.id == submission_id).values(
            status="scored", public_score=scores.public, private_score=scores.private, overall_score=scores.overall,
            labels_version=labels_version, scored_at=_db_time(now), error=None))


def mark_invalid(db: Database, submission_id: int, message: str, labels_version: str, now: datetime) -> None:
    with db.write() as conn:
        conn.execute(_S.update().where(_S.c.id == submission_id).values(
            status="invalid", public_score=None, private_score=None, overall_score=None,
            labels_version=labels_version, scored_at=_db_time(now), error=message))


def submission_by_id(db: Database, submission_id: int) -> SubmissionRow | None:
    with db.read() as conn:
        return _submission_by_id(conn, submission_id)


def _submission_by_id(conn: Connection, submission_id: int) -> SubmissionRow | None:
    r = conn.execute(select(*_ROW_COLUMNS).where(_S.c.id == submission_id)).first()
    return _submission_row(r) if r else None


def stored_body(db: Database, submission_id: int) -> tuple[bytes, str]:
    """The stored body (compact JSON; as received before fgvc stored it canonically), and its team's name
    (a token-mode body stored as received may leave out 'groupname')."""
    with db.read() as conn:
        r = conn.execute(select(_B.c.body, _T.c.name)
                         .select_from(_B.join(_S, _S.c.id == _B.c.submission_id).join(_T, _T.c.id == _S.c.team_id))
                         .where(_B.c.submission_id == submission_id)).one()
    return bytes(r.body), r.name


def ids_needing_scores(db: Database, labels_version: str, *, everything: bool = False) -> list[int]:
    """Pending submissions and those scored with other labels (or, with ``everything``, all)."""
    query = select(_S.c.id).order_by(_S.c.id)
    if not everything:
        query = query.where((_S.c.status == "pending") | (_S.c.labels_version.is_(None))
                            | (_S.c.labels_version != labels_version))
    with db.read() as conn:
        return list(conn.execute(query).scalars())


def quota_used(db: Database, team_id: int, now: datetime) -> int:
    with db.read() as conn:
        return _quota_used(conn, team_id, now)


def _quota_used(conn: Connection, team_id: int, now: datetime) -> int:
    return conn.execute(select(func.count()).select_from(_S).where(
        _S.c.team_id == team_id, _S.c.quota_day == quota_day(now))).scalar_one()


def team_submissions(db: Database, team_id: int) -> list[SubmissionRow]:
    with db.read() as conn:
        rows = conn.execute(select(*_ROW_COLUMNS).where(_S.c.team_id == team_id).order_by(_S.c.id.desc()))
        return [_submission_row(r) for r in rows]


def all_submissions(db: Database) -> list[tuple[str, SubmissionRow]]:
    with db.read() as conn:
        rows = conn.execute(select(_T.c.name, *_ROW_COLUMNS).select_from(_S.join(_T, _T.c.id == _S.c.team_id))
                            .order_by(_S.c.id))
        return [(r.name, _submission_row(r)) for r in rows]


def standing_rows(db: Database, rule: str) -> list[StandingRow]:
    """Every team with the scored submission that counts for it: its best public score (earliest of
    equals) under rule 'best', its latest scored one under 'last'."""
    with db.read() as conn:
        return _standing_rows(conn, rule)


def reply_facts(db: Database, submission_id: int, team_id: int, rule: str,
                now: datetime) -> tuple[SubmissionRow, dict[int, float], int]:
    """What a reply needs, from one snapshot: the submission, each team's counted public score (for
    the rank) and the team's quota used today."""
    with db.read() as conn:
        row = _submission_by_id(conn, submission_id)
        assert row is not None
        return row, _counted_public_scores(conn, rule), _quota_used(conn, team_id, now)


def _counted_public_scores(conn: Connection, rule: str) -> dict[int, float]:
    """``{team: public score of the submission that counts}``, by two cheap aggregates on an index:
    the maximum under rule 'best', the latest scored submission's under 'last'."""
    scored = _S.c.status == "scored"
    if rule == "best":
        query = select(_S.c.team_id, func.max(_S.c.public_score)).where(scored).group_by(_S.c.team_id)
    else:
        latest = select(func.max(_S.c.id)).where(scored).group_by(_S.c.team_id)
        query = select(_S.c.team_id, _S.c.public_score).where(_S.c.id.in_(latest))
    return {team_id: score for team_id, score in conn.execute(query)}


def _standing_rows(conn: Connection, rule: str) -> list[StandingRow]:
    order = (_S.c.public_score.desc(), _S.c.id.asc()) if rule == "best" else (_S.c.id.desc(),)
    pick = func.row_number().over(partition_by=_S.c.team_id, order_by=order).label("pick")
    ranked = select(_S.c.team_id, _S.c.id, _S.c.created_at, _S.c.public_score, _S.c.private_score,
                    _S.c.overall_score, pick).where(_S.c.status == "scored").subquery()
    ranked = select(ranked).where(ranked.c.pick == 1).subquery()  # one row per team before the join
    counts = select(_S.c.team_id, func.count().label("n"), func.max(_S.c.created_at).label("last_at")) \
        .group_by(_S.c.team_id).subquery()
    query = (
        select(_T.c.id, _T.c.name, ranked.c.id.label("submission_id"), ranked.c.created_at, ranked.c.public_score,
               ranked.c.private_score, ranked.c.overall_score, func.coalesce(counts.c.n, 0).label("n"),
               counts.c.last_at)
        .select_from(_T.outerjoin(ranked, ranked.c.team_id == _T.c.id)
                     .outerjoin(counts, counts.c.team_id == _T.c.id))
        .order_by(_T.c.id)
    )
    return [StandingRow(r.id, r.name, r.submission_id, _aware(r.created_at), r.public_score, r.private_score,
                        r.overall_score, r.n, _aware(r.last_at)) for r in conn.execute(query)]
