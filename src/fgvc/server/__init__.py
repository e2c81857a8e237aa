"""`fgvc server`: the competition's scoring server and leaderboard (the optional ``server`` extra).

Importing this package (and :mod:`fgvc.cli.server`) loads neither FastAPI nor SQLAlchemy, so the
core toolkit's command line can list the server commands without the extra installed; the web and
database modules are imported only when a server command runs.

Layout: ``competition`` (the competition on disk: settings, private labels, the public/private split,
scoring through :mod:`fgvc.competition.submission`), ``db`` (tables, engines, schema migration), ``store`` (the
SQL of teams and submissions: quota slots, idempotency keys), ``service`` (one submission from body
to reply, independent of HTTP), ``leaderboard`` (ranking and export), ``pages`` (escaped HTML),
``app`` (FastAPI routes), ``runner`` (start-up recovery and Uvicorn), ``security`` (tokens).
"""
