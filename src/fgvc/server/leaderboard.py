"""Ranking and export: what the public page, the JSON/CSV API and `fgvc server export` show.

Before the deadline teams are ranked by the public score of the submission that counts for them;
after it, by that same submission's private score (the ranking is then final: no submission is
accepted any more). Equal scores share a rank ("1, 2, 2, 4"); among them the earlier submission is
listed first. Private scores appear only in a final leaderboard or in the instructor's export.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime

from .competition import Competition, format_time
from .store import StandingRow

__all__ = ["Leaderboard", "Standing", "build_leaderboard"]


@dataclass(frozen=True)
class Standing:
    rank: int | None  # None: no scored submission yet
    row: StandingRow


@dataclass(frozen=True)
class Leaderboard:
    title: str
    rule: str
    deadline: datetime | None
    final: bool
    public_count: int
    private_count: int
    generated_at: datetime
    standings: tuple[Standing, ...]

    @property
    def ranked_count(self) -> int:
        return sum(1 for s in self.standings if s.rank is not None)

    def rank_of(self, team_id: int) -> int | None:
        return next((s.rank for s in self.standings if s.row.team_id == team_id), None)

    def to_dict(self, *, reveal_private: bool = False) -> dict:
        """JSON-ready; private and overall scores only when final or ``reveal_private`` (instructor)."""
        private = self.final or reveal_private
        teams = []
        for s in self.standings:
            r = s.row
            entry = {"rank": s.rank, "team": r.team, "public_score": r.public_score, "submissions": r.submissions,
                     "submission_id": r.submission_id,
                     "submitted_at": format_time(r.submitted_at) if r.submitted_at else None,
                     "last_submission_at": format_time(r.last_submission_at) if r.last_submission_at else None}
            if private:
                entry["private_score"] = r.private_score
                entry["overall_score"] = r.overall_score
            teams.append(entry)
        return {"title": self.title, "rule": self.rule, "final": self.final,
                "deadline": format_time(self.deadline) if self.deadline else None,
                "public_images": self.public_count, "private_images": self.private_count,
                "generated_at": format_time(self.generated_at), "teams": teams}

    def to_csv(self, *, reveal_private: bool = False) -> str:
        data = self.to_dict(reveal_private=reveal_private)
        private = ["private_score", "overall_score"] if self.final or reveal_private else []
        columns = ["rank", "team", "public_score", *private, "submissions", "submission_id", "submitted_at",
                   "last_submission_at"]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for team in data["teams"]:
            writer.writerow({k: _csv_safe(v) for k, v in team.items()})
        return out.getvalue()


def _csv_safe(value):
    """A team name opened in a spreadsheet must stay text, not become a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def build_leaderboard(competition: Competition, rows: list[StandingRow], now: datetime) -> Leaderboard:
    final = competition.is_closed(now)
    by_private = final and competition.has_private

    def score_key(r: StandingRow) -> tuple:
        return (-(r.private_score or 0.0),) if by_private else (-(r.public_score or 0.0),)

    scored = sorted((r for r in rows if r.submission_id is not None), key=lambda r: (*score_key(r), r.submission_id))
    standings: list[Standing] = []
    previous, rank = None, 0
    for position, r in enumerate(scored, start=1):
        if score_key(r) != previous:
            rank, previous = position, score_key(r)
        standings.append(Standing(rank, r))
    standings += [Standing(None, r) for r in sorted((r for r in rows if r.submission_id is None),
                                                    key=lambda r: r.team.casefold())]
    return Leaderboard(title=competition.title, rule=competition.leaderboard, deadline=competition.deadline,
                       final=final, public_count=competition.public_count,
                       private_count=len(competition.labels) - competition.public_count, generated_at=now,
                       standings=tuple(standings))
