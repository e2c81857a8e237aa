"""`fgvc serve` over HTTP: top-5 replies, batching across requests, bad input, the event loop stays free."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from PIL import Image

from fgvc.data.classes import ClassTable
from fgvc.export.metadata import Preprocessing
from fgvc.serve.predictors import BatchResult

WAIT_S = 60  # upper bound for a condition that holds within milliseconds; never a timing assumption


def client(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=WAIT_S, trust_env=False)


def jpeg(path) -> dict:
    return {"content": path.read_bytes(), "headers": {"content-type": "image/jpeg"}}


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.005)


def test_predict_answers_top5_with_ids_names_probabilities_and_the_object_box(serve, mmal_predictor, photos):
    server = serve(mmal_predictor)
    with client(server) as c:
        health = c.get("/healthz").json()
        assert health["status"] == "ok" and health["kind"] == "run" and health["explain"] is True
        one = c.post("/predict", params={"name": photos[0].name}, **jpeg(photos[0]))
        assert one.status_code == 200 and one.headers["content-type"] == "application/json"
        reply = one.json()["predictions"]
        assert len(reply) == 1 and reply[0]["file"] == photos[0].name
        top = reply[0]["top5"]
        classes = mmal_predictor.classes
        assert len(top) == min(5, len(classes)) and [t["rank"] for t in top] == list(range(1, len(top) + 1))
        assert all(t["class_id"] == classes.id_of(t["index"]) and t["name"] == classes.name_of(t["index"])
                   for t in top)
        probs = [t["probability"] for t in top]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)
        x0, y0, x1, y1 = reply[0]["object_box"]
        with Image.open(photos[0]) as img:
            assert 0 <= x0 <= x1 < img.width and 0 <= y0 <= y1 < img.height
        assert len(reply[0]["object_box_input"]) == 4

        files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:3]]
        several = c.post("/predict", files=files).json()["predictions"]
        assert [p["file"] for p in several] == [p.name for p in photos[:3]]
        # the same image gives the same answer alone or in a batch (within float rounding)
        assert [t["class_id"] for t in several[0]["top5"]] == [t["class_id"] for t in top]
        assert [t["probability"] for t in several[0]["top5"]] == pytest.approx(probs, abs=1e-5)


def test_an_exported_file_serves_the_runs_answers_and_says_the_picture_needs_the_run(
        serve, mmal_predictor, mmal_onnx_predictor, photos):
    files = [("file", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[:4]]
    with client(serve(mmal_predictor)) as c:
        from_run = c.post("/predict", files=files).json()["predictions"]
    with client(serve(mmal_onnx_predictor)) as c:
        from_file = c.post("/predict", files=files).json()["predictions"]
        assert c.get("/healthz").json()["kind"] == "onnx"
        refused = c.post("/explain", files=files[:1])
    for a, b in zip(from_file, from_run, strict=True):
        assert [t["class_id"] for t in a["top5"]] == [t["class_id"] for t in b["top5"]]
        assert [t["probability"] for t in a["top5"]] == pytest.approx([t["probability"] for t in b["top5"]], abs=1e-4)
        assert a["object_box"] == b["object_box"]
    assert refused.status_code == 501 and refused.json()["error"] == "no_explanation"
    assert "needs the run" in refused.json()["message"]


def test_the_explain_endpoint_draws_the_fgvc_explain_picture(serve, mmal_predictor, photos):
    with client(serve(mmal_predictor)) as c:
        reply = c.post("/explain", files={"file": (photos[0].name, photos[0].read_bytes(), "image/jpeg")})
    assert reply.status_code == 200
    assert reply.json()["picture"].startswith("data:image/png;base64,")


def _concurrently(server, images, n: int, gate: threading.Event) -> list[httpx.Response]:
    """``n`` one-image requests sent at once; the gate opens once all ``n`` images are queued."""
    with ThreadPoolExecutor(n) as pool, client(server) as c:
        futures = [pool.submit(c.post, "/predict", **jpeg(images[i % len(images)])) for i in range(n)]
        wait_until(lambda: c.get("/metrics.json").json()["queued"] == n, f"{n} images are queued")
        assert c.get("/metrics.json").json()["forward_passes"] == 0
        gate.set()
        return [f.result() for f in futures]


def test_concurrent_requests_share_forward_passes(serve, baseline_predictor, photos):
    gate = threading.Event()
    server = serve(baseline_predictor, gate=gate, max_batch=16, batch_window_ms=5)
    replies = _concurrently(server, photos, 6, gate)
    assert [r.status_code for r in replies] == [200] * 6
    with client(server) as c:
        metrics = c.get("/metrics.json").json()
    assert metrics["forward_passes"] == 1 and metrics["images"] == 6 and metrics["batch_sizes"] == {"6": 1}
    alone = serve(baseline_predictor)  # the batched answers equal one-at-a-time answers
    with client(alone) as c:
        for i, r in enumerate(replies):
            single = c.post("/predict", **jpeg(photos[i % len(photos)])).json()["predictions"][0]["top5"]
            assert [t["class_id"] for t in single] == [t["class_id"] for t in r.json()["predictions"][0]["top5"]]


def test_max_batch_caps_the_batch_and_one_turns_batching_off(serve, baseline_predictor, photos):
    for max_batch, passes in ((4, {"4": 1, "2": 1}), (1, {"1": 6})):
        gate = threading.Event()
        server = serve(baseline_predictor, gate=gate, max_batch=max_batch, batch_window_ms=0)
        assert all(r.status_code == 200 for r in _concurrently(server, photos, 6, gate))
        with client(server) as c:
            metrics = c.get("/metrics.json").json()
        assert metrics["batch_sizes"] == passes and metrics["images"] == 6


class BlockingPredictor:
    """A predictor whose forward pass blocks until released: shows where inference runs."""

    kind = "run"
    description = "blocking stub"
    explain_note = "no picture"

    def __init__(self) -> None:
        self.classes = ClassTable(("a", "b"), ("A", "B"))
        self.preprocessing = Preprocessing("plain", (32, 32), None, (0.5,) * 3, (0.5,) * 3)
        self.started, self.release = threading.Event(), threading.Event()

    def forward(self, images):
        self.started.set()
        assert self.release.wait(WAIT_S)
        return BatchResult(torch.tensor([[0.25, 0.75]]).repeat(len(images), 1), None)


def test_inference_runs_in_a_worker_thread_not_on_the_event_loop(serve, photos):
    predictor = BlockingPredictor()
    server = serve(predictor)
    with ThreadPoolExecutor(1) as pool, client(server) as c:
        pending = pool.submit(c.post, "/predict", **jpeg(photos[0]))
        assert predictor.started.wait(WAIT_S)
        assert c.get("/healthz").json()["status"] == "ok"  # answered while the forward pass is blocked
        predictor.release.set()
        assert pending.result().json()["predictions"][0]["top5"][0]["class_id"] == "b"


def test_bad_input_gets_a_4xx_naming_the_problem(serve, baseline_predictor, photos):
    server = serve(baseline_predictor, max_upload_bytes=50_000)
    with client(server) as c:
        def refused(response: httpx.Response, status: int, code: str, *words: str) -> None:
            body = response.json()
            assert response.status_code == status and body["error"] == code, body
            assert all(w in body["message"] for w in words), body["message"]

        refused(c.post("/predict", content=b"just text", params={"name": "notes.txt"}), 400, "bad_image",
                "'notes.txt'", "not a readable image", "JPEG")
        refused(c.post("/predict", files={"file": ("half.jpg", photos[0].read_bytes()[:200], "image/jpeg")}),
                400, "bad_image", "'half.jpg'")
        refused(c.post("/predict", content=b""), 400, "empty_body", "no body")
        refused(c.post("/predict", files={"file": ("empty.jpg", b"", "image/jpeg")}), 400, "empty_file",
                "'empty.jpg' is empty")
        form = b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nno file\r\n--b--\r\n'
        refused(c.post("/predict", content=form, headers={"content-type": "multipart/form-data; boundary=b"}),
                400, "no_image", "no file")
        refused(c.post("/predict", content=b"\xff" * 60_000), 413, "body_too_large", "--max-upload-mb")

        def chunks():  # no Content-Length: the limit is enforced while reading
            for _ in range(8):
                yield b"\xff" * 10_000

        refused(c.post("/predict", content=chunks()), 413, "body_too_large")
        many = [("file", (f"{i}.jpg", photos[0].read_bytes(), "image/jpeg")) for i in range(2)]
        refused(c.post("/explain", files=many), 400, "too_many_images", "at most 1")
        refused(c.get("/nowhere"), 404, "http_error", "/nowhere")
        refused(c.get("/predict"), 405, "http_error", "GET")
        assert c.get("/healthz").json()["forward_passes"] == 0  # nothing bad reached the model


def test_fgvc_serve_runs_an_exported_file_and_refuses_a_busy_port(mmal_onnx_predictor, photos, capsys):
    from fgvc.cli import main

    source = mmal_onnx_predictor.exported.path
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", str(source), "--port", str(busy.getsockname()[1]), "--device", "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot listen on 127.0.0.1:" in err and "--port" in err
        port = busy.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "fgvc", "serve", str(source), "--port", str(port),
                                "--device", "cpu", "--max-batch", "4"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert process.poll() is None, process.stdout.read()
            try:
                return httpx.get(url + "/healthz", trust_env=False, timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, "fgvc serve answers /healthz")
        with httpx.Client(base_url=url, trust_env=False, timeout=WAIT_S) as c:
            assert c.get("/healthz").json()["max_batch"] == 4
            reply = c.post("/predict", **jpeg(photos[0])).json()["predictions"][0]
        assert reply["top5"][0]["class_id"] in mmal_onnx_predictor.classes.ids and len(reply["object_box"]) == 4
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}/" in output and "dynamic batching up to 4 images per pass" in output
    assert "(page; POST /predict, GET /healthz, GET /metrics)" in output  # an exported file draws no explanation
