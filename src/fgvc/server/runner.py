"""`fgvc server run`: open the database, recover, register teams, serve with Uvicorn.

Start-up scores every submission a crash left 'pending' (stored, not yet scored) and every one scored
with other labels before the first request is taken, so a restart after ``kill -9`` serves complete
data.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError
from ..web.netbind import HttpLimits, url_host, uvicorn_config
from ..web.netbind import bind as _bind
from . import store
from .app import DEFAULT_MAX_BODY_BYTES, create_app
from .competition import CompetitionCache, utc_now
from .db import Database
from .faults import Faults
from .security import check_team_name
from .service import CompetitionService

__all__ = ["open_database", "read_teams_file", "serve"]


def open_database(competitions: CompetitionCache, db_url: str | None) -> Database:
    """The database named by --db, else the competition's (its --db at init, else SQLite in COMP_DIR)."""
    competition = competitions.current()
    db = Database(db_url or competition.database_url)
    db.ensure_schema(competition.competition_id)
    return db


def read_teams_file(path: str | os.PathLike) -> frozenset[str]:
    """Team names, one per line; blank lines and lines starting with # are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read --teams-file {path}: {e}") from None
    names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not names:
        raise UserError(f"--teams-file {path} lists no team names (one per line)")
    return frozenset(check_team_name(name) for name in names)


def _check_tls(certfile: str | None, keyfile: str | None) -> None:
    """Load the certificate once before starting, so a wrong file is one line, not Uvicorn's traceback."""
    if certfile is None:
        if keyfile is not None:
            raise UserError("--ssl-keyfile needs --ssl-certfile (the certificate that goes with the key)")
        return
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as e:
        raise UserError(f"cannot use --ssl-certfile {certfile}" + (f" with --ssl-keyfile {keyfile}" if keyfile else "")
                        + f": {getattr(e, 'strerror', None) or e}; give a PEM certificate and its private key "
                        "(one file holding both, or --ssl-keyfile)") from None


def serve(comp_dir: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000, db_url: str | None = None,
          auth: str = "token", teams_file: str | os.PathLike | None = None,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, limits: HttpLimits | None = None,
          ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
          trusted_proxies: tuple[str, ...] = (), new_teams_per_address: int = 3) -> None:
    import uvicorn

    competitions = CompetitionCache(comp_dir)
    competition = competitions.current()
    if teams_file is not None and auth != "open":
        raise UserError("--teams-file lists the team names accepted with --auth open; with token auth, add teams "
                        "with `fgvc server team add`")
    _check_tls(ssl_certfile, ssl_keyfile)
    faults = Faults.from_environment()
    db = open_database(competitions, db_url)
    registered = read_teams_file(teams_file) if teams_file is not None else None
    for name in sorted(registered or ()):
        store.get_or_create_team(db, name, utc_now())
    service = CompetitionService(competitions, db, auth=auth, registered=registered, faults=faults,
                                 new_teams_per_address=new_teams_per_address)
    recovered = service.rescore()
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    config = uvicorn_config(create_app(service, max_body_bytes=max_body_bytes), limits=limits,
                            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, trusted_proxies=trusted_proxies)
    scheme = "https" if ssl_certfile else "http"
    proxies = f"; forwarded headers trusted from {', '.join(trusted_proxies)}" if trusted_proxies else ""
    print(f"fgvc server: {competition.title!r} on {scheme}://{url_host(host)}:{bound_port}/ (auth {auth}, database "
          f"{db.safe_url}); {recovered.rescored} submission(s) scored at start-up{proxies}", flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        db.dispose()
