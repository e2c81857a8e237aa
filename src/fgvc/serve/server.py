"""Running the service with Uvicorn: in the foreground (``fgvc serve``) or in a thread (tests, benchmarks).

The socket is bound before Uvicorn starts, so a port in use is one line naming ``--port``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ..web.netbind import bind, url_host, uvicorn_config
from .app import create_app
from .predictors import Predictor, open_predictor
from .settings import ServeSettings

__all__ = ["serve", "banner", "bind", "ThreadedServer"]


def banner(predictor: Predictor, host: str, port: int, settings: ServeSettings) -> str:
    """What `fgvc serve` prints at start: the model, the address and the routes that answer (no
    POST /explain for a model that cannot draw the picture: that route only says 501 and why)."""
    batching = ("off" if settings.max_batch == 1 else
                f"up to {settings.max_batch} images per pass, {settings.batch_window_ms:g} ms window")
    routes = ["POST /predict", *(["POST /explain"] if predictor.explain_note is None else []), "GET /healthz",
              "GET /metrics"]
    return (f"fgvc serve: {predictor.description}\n  http://{url_host(host)}:{port}/  (page; {', '.join(routes)}); "
            f"dynamic batching {batching}")


def serve(source: str | Path, *, host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          settings: ServeSettings | None = None) -> None:
    """Serve a run folder, checkpoint or exported file until interrupted."""
    import uvicorn

    settings = settings or ServeSettings()
    predictor = open_predictor(source, device, settings.calibrate)
    sock = bind(host, port)
    print(banner(predictor, host, sock.getsockname()[1], settings), flush=True)
    try:
        uvicorn.Server(uvicorn_config(create_app(predictor, settings), log_level="info")).run(sockets=[sock])
    finally:
        sock.close()


class ThreadedServer:
    """The service on a free local port, in a thread of this process; ``url`` is its address."""

    def __init__(self, predictor: Predictor, settings: ServeSettings | None = None,
                 gate: threading.Event | None = None, host: str = "127.0.0.1") -> None:
        import uvicorn

        self.app = create_app(predictor, settings, gate)
        self.sock = bind(host, 0)
        self.url = f"http://{url_host(host)}:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn_config(self.app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not start")
            time.sleep(0.01)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()

    def __enter__(self) -> ThreadedServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
