"""Fixtures for `fgvc serve`: predictors of the tiny seeing runs and of an exported file, and the
service running in a thread of the test process on a free port (so a test can hold its batcher)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'fgvc[serve]'")
pytest.importorskip("onnxruntime", reason="the serve extra is not installed: pip install 'fgvc[serve]'")

from fgvc.serve.predictors import ExportedPredictor, TorchPredictor  # noqa: E402
from fgvc.serve.server import ThreadedServer  # noqa: E402
from fgvc.serve.settings import ServeSettings  # noqa: E402
from tests.seeing_fixtures import build_data, build_run  # noqa: E402
from tests.serve.exports import export  # noqa: E402


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """A proxy from the environment would swallow requests meant for 127.0.0.1."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def base(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="session")
def photos(base) -> list[Path]:
    return sorted((build_data(base) / "test").glob("*.jpg"))


@pytest.fixture(scope="session")
def baseline_predictor(base) -> TorchPredictor:
    return TorchPredictor.from_run(build_run(base, "baseline"), device="cpu")


@pytest.fixture(scope="session")
def mmal_predictor(base) -> TorchPredictor:
    return TorchPredictor.from_run(build_run(base, "mmal"), device="cpu")


@pytest.fixture(scope="session")
def mmal_onnx_predictor(base) -> ExportedPredictor:
    done = export(base, "mmal", "onnx")
    assert done.code == 0, done.err
    return ExportedPredictor(done.path, device="cpu")


@pytest.fixture
def serve():
    """``serve(predictor, gate=None, **settings)`` -> a running :class:`ThreadedServer`, closed afterwards."""
    started: list[ThreadedServer] = []

    def start(predictor, gate: threading.Event | None = None, **settings) -> ThreadedServer:
        server = ThreadedServer(predictor, ServeSettings(**settings), gate)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.app.state.batcher.gate is not None:
            server.app.state.batcher.gate.set()
        server.close()
