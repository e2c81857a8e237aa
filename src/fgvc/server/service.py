"""One submission from request body to reply, and the views of the data; no HTTP in here.

The order of a submission is what makes it safe:

1. identify the team (token, or 'groupname' in open mode); an idempotency key seen before returns
   the first result (a retry after a lost reply is never counted twice);
2. refuse after the deadline; check the body completely (invalid bodies are not stored and use no
   quota). The check costs one pass over the body whatever it holds, a body larger than the test set
   can need is refused before parsing, and a sender (a team, or an address in open mode) whose invalid
   attempts are used up gets a 429 before its body is read;
3. store the submission durably, as compact canonical JSON, in the team's next slot of the day (the
   quota check and the insert are one transaction: race-free);
4. score it and store the scores; a crash between 3 and 4 leaves a 'pending' row that the next start
   scores (:meth:`CompetitionService.rescore`);
5. reply with the public score, the rank and the quota left.

Every refusal is the web layer's :class:`~fgvc.web.errors.Refusal` with an HTTP status and a message for
a person. No message, reply or page carries a private label or, before the deadline, a private score.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from datetime import datetime

from ..competition.submission import SubmissionError, echo, parse_submission_text
from ..errors import ConfigError
from ..web.errors import Refusal
from . import store
from .competition import Clock, Competition, CompetitionCache, format_time, next_quota_reset, utc_now
from .db import IDEMPOTENCY_KEY_MAX, Database
from .faults import Faults
from .leaderboard import Leaderboard, build_leaderboard
from .limits import AttemptBucket, DailyCounter
from .security import bearer_token, check_team_name, look_alike, match_token

__all__ = ["CompetitionService", "RescoreSummary", "Refusal", "TeamView"]

log = logging.getLogger(__name__)

_NO_QUOTA_USED = "Nothing was stored and no quota was used."
# refusals of a body the client could have checked: each spends one of the sender's invalid attempts
_INVALID_ATTEMPT = frozenset({"invalid_submission", "body_too_large", "invalid_team_name", "team_not_registered",
                              "groupname_mismatch", "team_has_token", "team_name_look_alike"})


@dataclass(frozen=True)
class TeamView:
    """A team's own page: its submissions (newest first) and today's quota."""

    team: store.TeamRow
    submissions: list[store.SubmissionRow]
    counted_id: int | None  # the submission that counts on the leaderboard
    rank: int | None
    quota_left: int | None
    daily_limit: int
    quota_resets_at: datetime
    final: bool


@dataclass(frozen=True)
class RescoreSummary:
    rescored: int
    changed: int
    invalid: int


def _percent(score: float | None) -> str:
    return "-" if score is None else f"{score:.2%}"


class CompetitionService:
    """The competition as a server sees it: submit, look up, rank, rescore."""

    def __init__(self, competitions: CompetitionCache, db: Database, *, auth: str = "token",
                 registered: frozenset[str] | None = None, clock: Clock = utc_now,
                 faults: Faults | None = None, invalid_burst: int = 10, invalid_refill_seconds: float = 60,
                 new_teams_per_address: int = 3) -> None:
        if auth not in ("token", "open"):
            raise ValueError(f"auth must be 'token' or 'open', not {auth!r}")
        self.competitions, self.db, self.auth = competitions, db, auth
        self.registered, self.clock = registered, clock
        self.faults = faults or Faults()
        self.invalid_attempts = AttemptBucket(invalid_burst, invalid_refill_seconds)
        self.new_teams, self.new_teams_per_address = DailyCounter(), new_teams_per_address  # 0: no limit
        self._new_team_lock = threading.Lock()  # a look-alike check and the creation it allows are one step

    # -- identity ---------------------------------------------------------------------------------
    def team_from_token(self, authorization: str | None) -> store.TeamRow:
        token = bearer_token(authorization)
        if token is None:
            raise Refusal(401, "token_required",
                          "this server needs your team token: send the header 'Authorization: Bearer <token>' "
                          "(`fgvc submit FILE --url URL --token TOKEN`); your instructor gives each team its token",
                          headers={"WWW-Authenticate": "Bearer"})
        teams = store.teams_and_hashes(self.db)
        team_id = match_token(token, ((t.id, stored) for t, stored in teams))
        team = next((t for t, _ in teams if t.id == team_id), None)
        if team is None:
            raise Refusal(401, "token_unknown", "this token belongs to no team; check it, or ask your instructor "
                          "for a new one (`fgvc server team token`)", headers={"WWW-Authenticate": "Bearer"})
        return team

    def _open_team(self, groupname: str) -> store.TeamRow | None:
        """Open mode: the team the body names (None: not created yet), if the name may be used this way:
        a team with a token is not open to anyone who types its name."""
        try:
            check_team_name(groupname)
        except ConfigError as e:
            raise Refusal(400, "invalid_team_name", f"'groupname' cannot be a team name: {e}. "
                          f"{_NO_QUOTA_USED}") from None
        if self.registered is not None and groupname not in self.registered:
            raise Refusal(403, "team_not_registered",
                          f"team {groupname!r} is not registered for this competition; set 'groupname' to the name "
                          f"your instructor registered (exact spelling). {_NO_QUOTA_USED}")
        team = store.team_by_name(self.db, groupname)
        if team is not None and team.has_token:
            raise Refusal(403, "team_has_token",
                          f"team {groupname!r} submits with its token: send it as 'Authorization: Bearer <token>' "
                          f"(`fgvc submit FILE --url URL --token TOKEN`). {_NO_QUOTA_USED}")
        return team

    def _check_new_team(self, name: str, address: str, now: datetime) -> None:
        """Refuse a new open-mode team whose name looks like an existing one, or one over the address's cap
        (a new name must not pass for an existing team, and each address may create only so many a day)."""
        other = look_alike(name, (t.name for t, _ in store.teams_and_hashes(self.db)))
        if other is not None:
            raise Refusal(409, "team_name_look_alike",
                          f"team name {ascii(name)} looks like the existing team {ascii(other)} (same letters up to "
                          f"case, width or look-alike characters of another script); submit as {other!r} with its "
                          f"exact spelling, or choose a clearly different name. {_NO_QUOTA_USED}")
        cap = self.new_teams_per_address
        if cap and self.new_teams.count(address, now) >= cap:
            resets = next_quota_reset(now)
            wait = max(1, int((resets - now).total_seconds()))
            raise Refusal(429, "too_many_new_teams",
                          f"{cap} new team(s) were already created today from your address ({echo(address)}), the "
                          f"most this server allows (`fgvc server run --new-teams-per-address`); submit as one of "
                          f"them, or try again after {format_time(resets)}, in {_duration(wait)}. {_NO_QUOTA_USED}",
                          headers={"Retry-After": str(wait)})

    def _create_open_team(self, name: str, address: str, now: datetime) -> store.TeamRow:
        """Open mode: the team of a valid submission, created now if new (checked again under the lock)."""
        with self._new_team_lock:
            team = store.team_by_name(self.db, name)
            if team is None:
                self._check_new_team(name, address, now)
                team = store.get_or_create_team(self.db, name, now)
                self.new_teams.add(address, now)
        return team

    # -- submitting -------------------------------------------------------------------------------
    def submit(self, raw: bytes, *, authorization: str | None = None, idempotency_key: str | None = None,
               client: str | None = None) -> dict:
        """Handle one POSTed body from the address ``client``; returns the reply, or raises :class:`Refusal`."""
        now = self.clock()
        competition = self.competitions.current()
        key = _check_key(idempotency_key)
        body_sha256 = hashlib.sha256(raw).hexdigest()
        closed = competition.is_closed(now)
        team, address, sender = self._identify(authorization, client)
        # a retry after the deadline of a submission stored before it gets its first reply, not a 403
        # (before the deadline, the store step finds the key in the same transaction as the quota)
        if closed and (reply := self._replay(competition, team, key, body_sha256)):
            return reply
        self._check_attempts(sender, team, address, now)
        with self._spending_invalid_attempts(sender, now):
            submission = self._parse(raw, team, competition)
            if team is None:  # open mode: the body names the team
                team = self._open_team(submission["groupname"])
                if closed and (reply := self._replay(competition, team, key, body_sha256)):
                    return reply
            elif submission["groupname"] != team.name:
                raise Refusal(403, "groupname_mismatch",
                              f"'groupname' is {echo(submission['groupname'])} but this token belongs to team "
                              f"{team.name!r}: leave 'groupname' out or set it to {team.name!r}. {_NO_QUOTA_USED}")
            if closed:
                raise Refusal(403, "deadline_passed",
                              f"the competition closed at {format_time(competition.deadline)}; submissions are no "
                              "longer accepted. The final leaderboard is on the server's front page.")
            if team is None:  # a new open-mode team: refused before the body is checked, if it must be
                self._check_new_team(submission["groupname"], address, now)
            try:
                competition.validate(submission)
            except SubmissionError as e:
                raise Refusal(400, "invalid_submission", f"{e}\n{_NO_QUOTA_USED}") from None
            if team is None:
                team = self._create_open_team(submission["groupname"], address, now)
        try:
            stored = store.store_submission(self.db, team.id, body=_canonical(submission), body_sha256=body_sha256,
                                            key=key, now=now, daily_limit=competition.daily_limit)
        except store.QuotaExceeded as e:
            raise self._quota_refusal(competition, team, e.used, now) from None
        if stored.replayed:
            return self._replayed(competition, team, stored.row, body_sha256)
        self.faults.reached("kill-after-store")
        scores = competition.score(submission)
        store.record_scores(self.db, stored.row.id, scores, competition.labels_version, self.clock())
        self.faults.reached("kill-after-score")
        log.info("submission %d of team %r stored and scored", stored.row.id, team.name)
        return self._reply(competition, team, stored.row.id, replayed=False)

    def _identify(self, authorization: str | None, client: str | None) -> tuple[store.TeamRow | None, str, Hashable]:
        """(the token's team or None, the client's address, whose invalid attempts are counted)."""
        address = client or "unknown"
        # a team with a token may use it on an open server too (its name is not open to others)
        by_token = self.auth == "token" or bearer_token(authorization) is not None
        team = self.team_from_token(authorization) if by_token else None
        return team, address, ("team", team.id) if team is not None else ("address", address)

    def check_sender(self, authorization: str | None, client: str | None) -> None:
        """What the headers alone decide, before the HTTP side reads a body: a 401 for a missing or unknown
        token, a 429 for a sender whose invalid attempts are used up (after the deadline :meth:`submit`
        decides, as a retry of a stored submission is answered whatever came before)."""
        team, address, sender = self._identify(authorization, client)
        now = self.clock()
        if not self.competitions.current().is_closed(now):
            self._check_attempts(sender, team, address, now)

    def _check_attempts(self, sender: Hashable, team: store.TeamRow | None, address: str, now: datetime) -> None:
        """Refuse, before reading the body, a sender whose invalid attempts are used up (a 429 saying when)."""
        wait = self.invalid_attempts.retry_after(sender, now)
        if wait:
            who = f"team {team.name!r}" if team is not None else f"your address ({echo(address)})"
            bucket = self.invalid_attempts
            raise Refusal(429, "too_many_invalid_submissions",
                          f"{who} sent too many invalid submissions: this server checks {bucket.burst} in a row, then "
                          f"one every {bucket.refill_seconds:g} s. Try again in {_duration(wait)} (Retry-After), with "
                          f"the problems the last refusal named fixed. {_NO_QUOTA_USED}",
                          headers={"Retry-After": str(wait)}, extra={"retry_after_seconds": wait})

    @contextlib.contextmanager
    def _spending_invalid_attempts(self, sender: Hashable, now: datetime) -> Iterator[None]:
        """A refusal of the body (not of the deadline or quota) spends one of the sender's invalid attempts."""
        try:
            yield
        except Refusal as refusal:
            if refusal.code in _INVALID_ATTEMPT:
                self.invalid_attempts.spend(sender, now)
            raise

    def body_too_large(self, size: int | None, competition: Competition | None = None) -> Refusal:
        """The 413 for a body (of ``size`` bytes, if known) larger than any valid submission of this test set."""
        competition = competition or self.competitions.current()
        return Refusal(413, "body_too_large",
                       f"the request body is {'' if size is None else f'{size:,} bytes, '}more than a submission for "
                       f"this competition's {len(competition.labels):,} test images can need "
                       f"({competition.max_body_bytes:,} bytes at most, pretty-printed with room to spare); send the "
                       f"file `fgvc predict` wrote. {_NO_QUOTA_USED}")

    def _parse(self, raw: bytes, team: store.TeamRow | None, competition: Competition) -> dict:
        if len(raw) > competition.max_body_bytes:  # refused before parsing: its cost is bounded by the test set
            raise self.body_too_large(len(raw), competition)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Refusal(400, "invalid_submission", f"the request body is not UTF-8 text ({e}); send the "
                          f"submission JSON as written by `fgvc predict`. {_NO_QUOTA_USED}") from None
        try:
            return parse_submission_text(text, "the request body", default_groupname=team.name if team else None)
        except SubmissionError as e:
            raise Refusal(400, "invalid_submission", f"{e}\n{_NO_QUOTA_USED}") from None
        except (ValueError, RecursionError) as e:  # JSON the decoder refuses beyond syntax: depth, huge numbers
            raise Refusal(400, "invalid_submission", f"the request body is not a usable JSON submission "
                          f"({type(e).__name__}: {str(e)[:200]}). {_NO_QUOTA_USED}") from None

    def _replay(self, competition: Competition, team: store.TeamRow | None, key: str | None,
                body_sha256: str) -> dict | None:
        """The first reply again, if this team already sent this idempotency key; else None."""
        if team is None or key is None:
            return None
        row = store.find_by_key(self.db, team.id, key)
        return None if row is None else self._replayed(competition, team, row, body_sha256)

    def _replayed(self, competition: Competition, team: store.TeamRow, row: store.SubmissionRow,
                  body_sha256: str) -> dict:
        if row.body_sha256 != body_sha256:
            raise Refusal(409, "idempotency_key_reused",
                          f"this Idempotency-Key was first used for submission {row.id}, with a different body; "
                          "use a new key for a new submission (`fgvc submit` uses the file's hash)")
        if row.status == "pending":  # its first request died between storing and scoring
            self._score_stored(competition, row.id)
        return self._reply(competition, team, row.id, replayed=True)

    def _quota_refusal(self, competition: Competition, team: store.TeamRow, used: int, now: datetime) -> Refusal:
        resets = next_quota_reset(now)
        wait = max(1, int((resets - now).total_seconds()))
        return Refusal(429, "quota_exceeded",
                       f"team {team.name!r} has used all {competition.daily_limit} submission(s) of today (UTC); "
                       f"the quota resets at {format_time(resets)}, in {_duration(wait)}. {_NO_QUOTA_USED}",
                       headers={"Retry-After": str(wait)},
                       extra={"quota_resets_at": format_time(resets), "daily_limit": competition.daily_limit,
                              "quota_left_today": 0})

    def _reply(self, competition: Competition, team: store.TeamRow, submission_id: int, *, replayed: bool) -> dict:
        now = self.clock()
        row, counted, used = store.reply_facts(self.db, submission_id, team.id, competition.leaderboard, now)
        if competition.is_closed(now):  # a replay after the deadline: the final (private) rank
            board = self.leaderboard(competition, now)
            rank, ranked = board.rank_of(team.id), board.ranked_count
        else:  # as on the public leaderboard: equal scores share a rank
            mine = counted.get(team.id)
            rank = None if mine is None else 1 + sum(1 for score in counted.values() if score > mine)
            ranked = len(counted)
        limit = competition.daily_limit
        left = max(0, limit - used) if limit else None
        resets = next_quota_reset(now)
        parts = [f"submission {row.id} of team {team.name!r} scored {_percent(row.public_score)} on the "
                 f"{competition.public_count} public test image(s)"]
        if replayed:
            parts[0] = f"already received as submission {row.id} (no quota used); it scored " \
                       f"{_percent(row.public_score)} on the {competition.public_count} public test image(s)"
        if rank is not None:
            parts.append(f"rank {rank} of {ranked}")
        if left is not None:
            parts.append(f"{left} of {limit} submission(s) left today (the quota resets at {format_time(resets)})")
        return {
            "accuracy": row.public_score,
            "public_score": row.public_score,
            "submission_id": row.id,
            "team": team.name,
            "submitted_at": format_time(row.created_at),
            "rank": rank,
            "teams_ranked": ranked,
            "quota_left_today": left,
            "daily_limit": limit,
            "quota_resets_at": format_time(resets),
            "replayed": replayed,
            "message": "; ".join(parts),
        }

    # -- views ------------------------------------------------------------------------------------
    def leaderboard(self, competition: Competition | None = None, now: datetime | None = None) -> Leaderboard:
        competition = competition or self.competitions.current()
        return build_leaderboard(competition, store.standing_rows(self.db, competition.leaderboard),
                                 now or self.clock())

    def team_view(self, team: store.TeamRow) -> TeamView:
        competition, now = self.competitions.current(), self.clock()
        board = self.leaderboard(competition, now)
        counted = next((s.row.submission_id for s in board.standings if s.row.team_id == team.id), None)
        limit = competition.daily_limit
        return TeamView(team=team, submissions=store.team_submissions(self.db, team.id), counted_id=counted,
                        rank=board.rank_of(team.id),
                        quota_left=max(0, limit - store.quota_used(self.db, team.id, now)) if limit else None,
                        daily_limit=limit, quota_resets_at=next_quota_reset(now), final=board.final)

    # -- scoring stored bodies --------------------------------------------------------------------
    def _score_stored(self, competition: Competition, submission_id: int) -> store.SubmissionRow | None:
        body, team_name = store.stored_body(self.db, submission_id)
        now = self.clock()
        try:
            submission = parse_submission_text(body.decode("utf-8"), f"stored submission {submission_id}",
                                               default_groupname=team_name)
            competition.validate(submission)
        except (SubmissionError, UnicodeDecodeError) as e:
            store.mark_invalid(self.db, submission_id, str(e), competition.labels_version, now)
            return None
        store.record_scores(self.db, submission_id, competition.score(submission), competition.labels_version, now)
        return store.submission_by_id(self.db, submission_id)

    def rescore(self, *, everything: bool = False) -> RescoreSummary:
        """Score pending submissions and those scored with older labels (all of them with ``everything``).

        Runs at every server start (a crash between storing and scoring leaves 'pending' rows) and as
        `fgvc server rescore`. It loops until no row is left behind, so a submission scored meanwhile
        by a running server with the previous labels is caught too."""
        rescored = changed = invalid = 0
        first = True
        while True:
            competition = self.competitions.current()
            ids = store.ids_needing_scores(self.db, competition.labels_version, everything=everything and first)
            first = False
            if not ids:
                return RescoreSummary(rescored, changed, invalid)
            for submission_id in ids:
                before = store.submission_by_id(self.db, submission_id)
                after = self._score_stored(competition, submission_id)
                rescored += 1
                if after is None:
                    invalid += 1
                elif before is not None and before.status == "scored" and (
                        before.public_score, before.private_score) != (after.public_score, after.private_score):
                    changed += 1

    def ready(self) -> dict:
        """Readiness: a durable write to the database, as every submission makes (health only reads)."""
        self.db.probe_write(format_time(self.clock()))
        return {"status": "ready", "message": "the database accepts writes: submissions can be stored"}

    def health(self) -> dict:
        from sqlalchemy import text

        with self.db.read() as conn:
            conn.execute(text("SELECT 1"))
        competition = self.competitions.current()
        return {"status": "ok", "message": f"{competition.title}: accepting submissions"
                if not competition.is_closed(self.clock()) else f"{competition.title}: closed, final leaderboard"}


def _canonical(submission: dict) -> bytes:
    """What is stored of a valid submission: its two keys as compact JSON with sorted keys, so a team's
    stored bytes per day are bounded by its quota times the size of the test set (no padding, no extras)."""
    kept = {"groupname": submission["groupname"], "images": submission["images"]}
    return json.dumps(kept, separators=(",", ":"), sort_keys=True).encode("ascii")  # non-ASCII as \u escapes


def _check_key(key: str | None) -> str | None:
    if key is None or key == "":
        return None
    if len(key) > IDEMPOTENCY_KEY_MAX or not key.isascii() or not key.isprintable():
        raise Refusal(400, "invalid_idempotency_key",
                      f"the Idempotency-Key header must be at most {IDEMPOTENCY_KEY_MAX} printable ASCII characters "
                      f"(`fgvc submit` sends the file's hash). {_NO_QUOTA_USED}")
    return key


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes = rest // 60
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{seconds} s"
