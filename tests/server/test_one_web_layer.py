"""`fgvc serve` and `fgvc server` share one web layer (issue 19, "One web layer", "Metrics the way operators
read them"): the same malformed request gets the same envelope and status from both, both send the security
headers, and both expose Prometheus metrics that count the requests made."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image

from fgvc.data.classes import ClassTable

from .conftest import REPO, bearer

pytest.importorskip("prometheus_client", reason="the serve and server extras install prometheus-client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

SECURITY_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "no-referrer"}
API = "/api/submissions"


class _Preprocessing:
    """The part of a run's preprocessing the service reads: any image becomes an 8x8 input."""

    input_size, recipe, whole_image = 8, "plain", True

    def image_transform(self):
        return lambda rgb: torch.zeros(3, 8, 8, dtype=torch.uint8)


class StubPredictor:
    """Two classes, always 'b' at 0.75; no explanation picture."""

    kind, description, explain_note = "run", "stub", "no picture"
    classes = ClassTable(("a", "b"), ("A", "B"))
    preprocessing = _Preprocessing()

    def forward(self, images):
        from fgvc.serve.predictors import BatchResult

        return BatchResult(torch.tensor([[0.25, 0.75]]).repeat(len(images), 1), None)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def serve_client():
    from starlette.testclient import TestClient

    from fgvc.serve.app import create_app
    from fgvc.serve.settings import ServeSettings

    app = create_app(StubPredictor(), ServeSettings(max_upload_bytes=4096, max_batch=4, batch_window_ms=0))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def token(service):
    from .conftest import add_team

    return add_team(service, "alpha")


def _envelope(reply) -> tuple[int, str]:
    body = reply.json()
    assert reply.headers["content-type"] == "application/json" and set(body) == {"error", "message"}, body
    assert isinstance(body["message"], str) and body["message"]
    return reply.status_code, body["error"]


def test_a_body_over_the_limit_is_the_same_413_from_both(serve_client, client, service, token):
    served = serve_client.post("/predict", content=b"\xff" * 5000)
    limit = service.competitions.current().max_body_bytes
    scored = client.post(API, content=b" " * (limit + 1), headers=bearer(token))
    assert _envelope(served) == _envelope(scored) == (413, "body_too_large")
    form = client.post("/team", content=b"token=" + b"x" * 5000)  # the server's other body limit: 4 KB
    assert _envelope(form) == (413, "body_too_large")


def test_a_wrong_method_is_the_same_405_from_both(serve_client, client):
    served, scored = serve_client.get("/predict"), client.get(API)
    assert _envelope(served) == _envelope(scored) == (405, "http_error")
    assert served.json()["message"] == "GET is not accepted at /predict (only POST)"
    assert scored.json()["message"] == f"GET is not accepted at {API} (only POST)"


def test_an_unknown_path_is_the_same_404_from_both(serve_client, client):
    served, scored = serve_client.get("/nowhere"), client.get("/nowhere")
    assert _envelope(served) == _envelope(scored) == (404, "http_error")
    assert served.json()["message"].startswith("nothing at /nowhere; ")
    assert scored.json()["message"].startswith("nothing at /nowhere; ")


def test_a_content_length_that_is_not_a_number_is_the_same_400_from_both(serve_client, client, token):
    served = serve_client.post("/predict", content=b"x", headers={"content-length": "x1"})
    scored = client.post(API, content=b"x", headers=bearer(token, **{"content-length": "x1"}))
    assert _envelope(served) == _envelope(scored) == (400, "bad_request")
    assert served.json()["message"] == scored.json()["message"] == "the Content-Length header is not a number"


@pytest.mark.parametrize("path", ["/healthz", "/", "/nowhere", "/metrics"])
def test_both_send_the_security_headers_on_every_reply(serve_client, client, path):
    for reply in (serve_client.get(path), client.get(path)):
        assert {k: reply.headers.get(k) for k in SECURITY_HEADERS} == SECURITY_HEADERS, (path, reply.headers)
        assert "default-src 'none'" in reply.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in reply.headers["content-security-policy"]


def test_the_serve_pages_policy_runs_its_one_script_and_nothing_else(serve_client, client):
    page = serve_client.get("/")
    [script] = re.findall(r"<script>(.*?)</script>", page.text, flags=re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = dict(p.strip().split(" ", 1) for p in page.headers["content-security-policy"].split(";"))
    assert policy["script-src"] == f"'sha256-{digest}'"  # exactly the page's script: an injected one is refused
    assert policy["connect-src"] == "'self'" and policy["img-src"] == "'self' blob: data:"  # fetch, preview, picture
    assert "script-src" not in client.get("/").headers["content-security-policy"]  # the server's pages run none


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_serve_metrics_are_prometheus_text_counting_requests_batches_and_the_queue(serve_client):
    for _ in range(2):
        assert serve_client.get("/healthz").status_code == 200
    assert serve_client.post("/predict", content=png()).json()["predictions"][0]["top5"][0]["class_id"] == "b"
    reply = serve_client.get("/metrics")
    assert reply.headers["content-type"].startswith("text/plain")
    samples = _samples(reply.text)
    healthz = (("method", "GET"), ("route", "/healthz"), ("status", "200"))
    assert samples["fgvc_serve_http_request_duration_seconds_count", healthz] == 2
    assert samples["fgvc_serve_batch_size_count", ()] == 1 and samples["fgvc_serve_batch_size_sum", ()] == 1
    assert samples["fgvc_serve_batch_size_bucket", (("le", "1.0"),)] == 1
    assert samples["fgvc_serve_queue_depth", ()] == 0
    assert serve_client.get("/metrics.json").json()["batch_sizes"] == {"1": 1}  # the JSON view for a person


def test_server_metrics_count_submissions_scored_and_refused_by_code(client, comp, token):
    assert client.post(API, json=comp.body("alpha"), headers=bearer(token)).status_code == 200
    assert client.post(API, content=b"{", headers=bearer(token)).status_code == 400
    assert client.post(API, json=comp.body("alpha")).status_code == 401
    samples = _samples(client.get("/metrics").text)
    assert samples["fgvc_server_submissions_total", (("kind", "new"),)] == 1
    assert samples["fgvc_server_submissions_refused_total", (("code", "invalid_submission"),)] == 1
    assert samples["fgvc_server_submissions_refused_total", (("code", "token_required"),)] == 1
    route = (("method", "POST"), ("route", API), ("status", "400"))
    assert samples["fgvc_server_http_request_duration_seconds_count", route] == 1


def test_two_apps_in_one_process_keep_their_own_counts(service):
    from starlette.testclient import TestClient

    from fgvc.server.app import create_app

    with TestClient(create_app(service)) as first, TestClient(create_app(service)) as second:
        first.get("/healthz")
        key = ("fgvc_server_http_request_duration_seconds_count",
               (("method", "GET"), ("route", "/healthz"), ("status", "200")))
        assert _samples(first.get("/metrics").text)[key] == 1
        assert key not in _samples(second.get("/metrics").text)


_WITHOUT_THE_WEB_EXTRAS = """
import sys

class WithoutTheWebExtras:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("fastapi", "sqlalchemy"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, WithoutTheWebExtras())
from fgvc.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("args", "extra"), [(["serve", "run-folder"], "serve"), (["server", "team", "list", "c"],
                                                                                  "server")])
def test_both_commands_say_a_missing_extra_in_the_same_line(tmp_path, args, extra):
    result = subprocess.run([sys.executable, "-c", _WITHOUT_THE_WEB_EXTRAS, *args], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert re.fullmatch(rf"fgvc: error: `fgvc {args[0]}` needs (fastapi|sqlalchemy)[.\w]*, which is not installed; "
                        rf"install the {extra} extra: pip install 'fgvc\[{extra}\]'", line), line


def test_a_request_that_fails_validation_is_400_bad_request_in_either_service():
    """FastAPI's own check of a typed parameter answers 422 'detail'; both services answer the envelope, 400."""
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from fgvc.web.errors import install_error_handlers

    app = FastAPI()
    install_error_handlers(app, not_found="try /n", bug="a bug")

    @app.get("/n")
    async def number(n: int) -> dict:
        return {"n": n}

    with TestClient(app) as c:
        reply = c.get("/n", params={"n": "seven"})
    assert _envelope(reply) == (400, "bad_request")
    assert reply.json()["message"].startswith("the request is malformed: ")
