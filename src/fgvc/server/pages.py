"""The HTML pages: server-rendered, no JavaScript, readable on a phone, every user string escaped.

Every value that comes from a team, the instructor or the database passes through :func:`_e`
(``html.escape`` with quotes) at the point where it is put into markup; the pages carry a
Content-Security-Policy without any script source, so even a missed escape could not run a script.
"""

from __future__ import annotations

import html
from datetime import datetime

from .competition import format_time
from .leaderboard import Leaderboard
from .service import TeamView

__all__ = ["CONTENT_SECURITY_POLICY", "leaderboard_page", "team_login_page", "team_page"]

CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
                           "frame-ancestors 'none'")

_STYLE = """
:root { color-scheme: light dark; --line: #8884; --muted: #777; --accent: #2a6fdb; }
* { box-sizing: border-box; }
body { font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 56rem; padding: 1rem; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; overflow-wrap: anywhere; }
.status { margin: .25rem 0 1rem; font-weight: 600; }
.status.open { color: var(--accent); }
.note, footer { color: var(--muted); font-size: .9rem; }
.wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: .45rem .5rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.team { overflow-wrap: anywhere; word-break: break-word; }
tr.counted td { font-weight: 600; }
form { display: flex; flex-wrap: wrap; gap: .5rem; margin: 1rem 0; }
input[type=password] { flex: 1 1 16rem; min-width: 0; padding: .5rem; font: inherit; }
button { padding: .5rem 1rem; font: inherit; }
.error { color: #c0392b; font-weight: 600; }
@media (max-width: 40rem) {
  body { padding: .6rem; font-size: 15px; }
  th, td { padding: .35rem .3rem; }
  .wide { display: none; }
}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "–"
    return f'<time datetime="{_e(format_time(moment))}">{_e(moment.strftime("%Y-%m-%d %H:%M"))} UTC</time>'


def time_left(deadline: datetime, now: datetime) -> str:
    seconds = max(0, int((deadline - now).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = ([f"{days} day{'s' if days != 1 else ''}"] if days else []) + ([f"{hours} h"] if hours or days else [])
    return " ".join([*parts, f"{minutes} min"]) if seconds >= 60 else "less than a minute"


def _document(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="referrer" content="no-referrer">\n'
            f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def _status(board: Leaderboard, now: datetime) -> str:
    if board.deadline is None:
        return '<p class="status open" id="status">Open: no deadline set.</p>'
    if board.final:
        basis = (f"by the {board.private_count} private test image(s)" if board.private_count
                 else "by the public test images")
        return (f'<p class="status final" id="status">Closed at {_when(board.deadline)}. '
                f"Final ranking, {_e(basis)}.</p>")
    return (f'<p class="status open" id="status">Deadline {_when(board.deadline)}: '
            f'<span id="time-left">{_e(time_left(board.deadline, now))} left</span>.</p>')


def leaderboard_page(board: Leaderboard, now: datetime) -> str:
    private = board.final and board.private_count > 0
    head = ('<tr><th class="num">#</th><th>Team</th><th class="num">Public</th>'
            + ('<th class="num">Private</th>' if private else "")
            + '<th class="num">Entries</th><th class="wide">Counted submission</th></tr>')
    rows = []
    for s in board.standings:
        r = s.row
        rows.append(
            f'<tr><td class="num">{_e(s.rank) if s.rank is not None else "–"}</td>'
            f'<td class="team">{_e(r.team)}</td><td class="num">{_score(r.public_score)}</td>'
            + (f'<td class="num">{_score(r.private_score)}</td>' if private else "")
            + f'<td class="num">{_e(r.submissions)}</td><td class="wide">{_when(r.submitted_at)}</td></tr>')
    table = (f'<div class="wrap"><table id="leaderboard"><thead>{head}</thead><tbody>{"".join(rows)}</tbody>'
             "</table></div>" if rows else '<p id="leaderboard">No submissions yet.</p>')
    rule = "best public score" if board.rule == "best" else "latest submission"
    if not board.private_count:
        split = f"Scores use all {board.public_count} test images."
    elif board.final:
        split = f"Scores use {board.public_count} public and {board.private_count} private test images."
    else:
        split = (f"Public scores use {board.public_count} of the test images; the other {board.private_count} decide "
                 "the final ranking, revealed after the deadline.")
    body = (f"<header><h1>{_e(board.title)}</h1>{_status(board, now)}</header>\n<main>{table}\n"
            f'<p class="note">{_e(split)} Each team\'s {_e(rule)} counts; equal scores share a rank, the '
            f"earlier submission listed first. Page generated {_when(now)}.</p></main>\n"
            '<footer><a href="team">Your team\'s submissions</a> · <a href="api/leaderboard">JSON</a> · '
            '<a href="api/leaderboard?format=csv">CSV</a></footer>')
    return _document(board.title, body)


def team_login_page(title: str, error: str | None = None) -> str:
    message = f'<p class="error" id="error">{_e(error)}</p>' if error else ""
    body = (f"<header><h1>{_e(title)}</h1><p class=\"status\">Your team's submissions</p></header>\n<main>"
            f'{message}<form method="post" action="team"><label for="token">Team token</label>'
            '<input type="password" id="token" name="token" autocomplete="current-password" required>'
            '<button type="submit">Show</button></form>'
            '<p class="note">The token your instructor gave your team (`fgvc server team add` printed it). It is '
            'sent in the form, never in the address.</p></main>\n<footer><a href=".">Leaderboard</a></footer>')
    return _document(title, body)


def team_page(title: str, view: TeamView) -> str:
    head = ('<tr><th class="num">Id</th><th>Submitted</th><th class="num">Public</th>'
            + ('<th class="num">Private</th>' if view.final else "") + "<th>Status</th></tr>")
    rows = []
    for s in view.submissions:
        counted = s.id == view.counted_id
        status = s.status + (" (counts on the leaderboard)" if counted else "")
        rows.append(f'<tr{" class=counted" if counted else ""}><td class="num">{_e(s.id)}</td>'
                    f"<td>{_when(s.created_at)}</td><td class=\"num\">{_score(s.public_score)}</td>"
                    + (f'<td class="num">{_score(s.private_score)}</td>' if view.final else "")
                    + f"<td>{_e(status)}</td></tr>")
    table = (f'<div class="wrap"><table id="submissions"><thead>{head}</thead><tbody>{"".join(rows)}</tbody>'
             "</table></div>" if rows else '<p id="submissions">No submissions yet.</p>')
    quota = ("no daily limit" if view.quota_left is None else
             f"{view.quota_left} of {view.daily_limit} submission(s) left today; the quota resets at "
             f"{format_time(view.quota_resets_at)}")
    rank = f"rank {view.rank}" if view.rank is not None else "not ranked yet"
    body = (f"<header><h1>{_e(title)}</h1><p class=\"status\" id=\"team\">Team {_e(view.team.name)}: "
            f"{_e(rank)}; {_e(quota)}.</p></header>\n<main>{table}</main>\n"
            '<footer><a href=".">Leaderboard</a></footer>')
    return _document(f"{title}: {view.team.name}", body)
