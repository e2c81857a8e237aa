"""The one message for a web command whose optional extra is not installed (importable without the extras)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import UserError

__all__ = ["EXTRA_MODULES", "needs_extra"]

_WEB = frozenset({"fastapi", "starlette", "uvicorn", "h11", "anyio", "multipart", "python_multipart",
                  "prometheus_client"})
EXTRA_MODULES = {
    "serve": _WEB | {"onnxruntime"},
    "server": _WEB | {"sqlalchemy", "psycopg", "psycopg_binary", "confusable_homoglyphs"},
}
"""The top-level modules each extra installs: a missing one of these is the extra's, any other a bug."""


@contextlib.contextmanager
def needs_extra(command: str, extra: str) -> Iterator[None]:
    """Run ``fgvc COMMAND``'s code: a module of ``extra`` that is missing becomes one line naming the extra."""
    try:
        yield
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in EXTRA_MODULES[extra]:
            raise
        raise UserError(f"`fgvc {command}` needs {e.name}, which is not installed; install the {extra} extra: "
                        f"pip install 'fgvc[{extra}]'") from None
