"""``fgvc serve``: a trained run or an exported file as an HTTP service (the optional ``serve`` extra).

Layout: ``predictors`` (a run through PyTorch, or an exported file through its runtime, behind one
interface), ``batcher`` (dynamic batching across requests, inference in its own thread), ``uploads``
(request bodies to decoded images, with the size limit), ``app`` (FastAPI routes), ``page`` (the
drop-a-photo page), ``server`` (Uvicorn in the foreground or in a thread).

Importing this package loads neither FastAPI nor Uvicorn; :func:`serve` does, when it runs.
"""

from __future__ import annotations

from pathlib import Path

from .settings import ServeSettings

__all__ = ["ServeSettings", "serve"]


def serve(source: str | Path, *, host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          settings: ServeSettings | None = None) -> None:
    """Serve ``source`` (run folder, checkpoint or exported file) until interrupted."""
    from ..web.extras import needs_extra

    with needs_extra("serve", "serve"):
        from .server import serve as run_server

        run_server(source, host=host, port=port, device=device, settings=settings)
