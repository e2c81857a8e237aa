"""A listening socket for `fgvc serve` and `fgvc server run`: bound before Uvicorn starts, so a busy
port is one line naming it, not a traceback from inside the server."""

from __future__ import annotations

import socket

from .errors import UserError

__all__ = ["bind"]


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}; pass another --port (or --host)") from None
    sock.set_inheritable(True)
    return sock
