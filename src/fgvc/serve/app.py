"""The HTTP service: ``POST /predict``, ``POST /explain``, ``GET /healthz``, ``GET /metrics`` (Prometheus'
text format), ``GET /metrics.json`` (the same counts for a person) and the page at ``GET /``.

Every reply but the page and ``/metrics`` is JSON; errors carry the web layer's envelope
``{"error": code, "message": text for a person}`` with its statuses (:mod:`fgvc.web.errors`), and every
reply the web layer's security headers (:mod:`fgvc.web.headers`, with the page's policy).
Decoding runs in worker threads, the model in the batcher's inference thread: the event loop only
moves bytes, so a slow forward pass never stops the service from accepting requests.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..ops.boxes import scale_box
from ..web.errors import Refusal, install_error_handlers
from ..web.headers import SecurityHeaders
from ..web.metrics import ServiceMetrics
from .batcher import BatchStats, DynamicBatcher, ImageResult
from .page import CONTENT_SECURITY_POLICY, page_html
from .predictors import Predictor
from .settings import ServeSettings
from .uploads import DecodedImage, decode_upload, read_uploads

__all__ = ["ServeSettings", "create_app"]


class _BatcherCollector:
    """The batcher's counts as Prometheus metrics, read at each scrape (the batcher keeps counting alone)."""

    def __init__(self, stats: BatchStats, max_batch: int) -> None:
        self.stats = stats
        self.bounds = sorted({1, *(2**k for k in range(max_batch.bit_length())), max_batch})

    def collect(self):
        s = self.stats
        sizes = HistogramMetricFamily("fgvc_serve_batch_size", "Images per forward pass")
        sizes.add_metric([], [(str(float(b)), sum(n for size, n in s.batch_sizes.items() if size <= b))
                              for b in self.bounds] + [("+Inf", s.forward_passes)], sum_value=s.images)
        yield sizes
        yield GaugeMetricFamily("fgvc_serve_queue_depth", "Images waiting for a forward pass", value=s.queued)
        yield CounterMetricFamily("fgvc_serve_images", "Images through a forward pass", value=s.images)
        yield CounterMetricFamily("fgvc_serve_failed_passes", "Forward passes that raised", value=s.failed_passes)


def _prediction(predictor: Predictor, image: DecodedImage, result: ImageResult, top_k: int) -> dict:
    """One image's reply: top-k classes (ID, name, index, probability) and, where the model localises,
    its object box on the uploaded image and on the model input (inclusive pixels)."""
    classes = predictor.classes
    values, indices = result.probabilities.topk(min(top_k, len(classes)))
    reply: dict = {"file": image.name, "width": image.width, "height": image.height,
                   "top5": [{"rank": r + 1, "class_id": classes.id_of(i), "name": classes.name_of(i), "index": i,
                             "probability": round(p, 6)}
                            for r, (p, i) in enumerate(zip(values.tolist(), indices.tolist(), strict=True))]}
    if result.object_box is not None:
        box = [int(v) for v in result.object_box.tolist()]
        size = predictor.preprocessing.input_size
        reply["object_box_input"] = box
        reply["object_box"] = (list(scale_box(box, image.width / size, image.height / size))
                               if predictor.preprocessing.whole_image else None)
    return reply


def create_app(predictor: Predictor, settings: ServeSettings | None = None,
               gate: threading.Event | None = None) -> FastAPI:
    """The service for ``predictor``; ``gate`` holds the batcher until set (tests, see :mod:`.batcher`)."""
    settings = settings or ServeSettings()
    batcher = DynamicBatcher(predictor.forward, settings.max_batch, settings.batch_window_ms / 1000, gate)
    transform = predictor.preprocessing.image_transform()
    requests = {"predict": 0, "explain": 0, "refused": 0}
    metrics = ServiceMetrics("fgvc_serve")
    metrics.registry.register(_BatcherCollector(batcher.stats, settings.max_batch))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="fgvc serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher
    app.state.predictor = predictor

    app.add_middleware(SecurityHeaders, content_security_policy=CONTENT_SECURITY_POLICY)
    metrics.install(app)

    def refused(_refusal: Refusal) -> None:
        requests["refused"] += 1

    install_error_handlers(app, not_found="try POST /predict, GET /healthz or the page at /",
                           bug="this is a bug in fgvc, please report it", on_refusal=refused)

    async def decoded(request: Request, limit_images: int) -> list[DecodedImage]:
        uploads = await read_uploads(request, settings.max_upload_bytes, limit_images)
        return await asyncio.gather(*(asyncio.to_thread(decode_upload, u, transform) for u in uploads))

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        images = await decoded(request, settings.max_images)
        results = await batcher.submit([image.pixels for image in images])
        requests["predict"] += 1
        return JSONResponse({"model": predictor.description,
                             "predictions": [_prediction(predictor, image, result, settings.top_k)
                                             for image, result in zip(images, results, strict=True)]})

    @app.post("/explain")
    async def explain(request: Request) -> JSONResponse:
        if predictor.explain_note is not None:
            raise Refusal(501, "no_explanation", predictor.explain_note)
        uploads = await read_uploads(request, settings.max_upload_bytes, 1)
        await asyncio.to_thread(decode_upload, uploads[0], transform)  # a bad image is a 400, not a failed picture
        png = await batcher.run_in_worker(predictor.explain, uploads[0].name, uploads[0].data)
        requests["explain"] += 1
        return JSONResponse({"file": uploads[0].name,
                             "picture": "data:image/png;base64," + base64.b64encode(png).decode("ascii")})

    def counts() -> dict:
        return {**batcher.stats.to_dict(), "requests": dict(requests), "max_batch": settings.max_batch,
                "batch_window_ms": settings.batch_window_ms}

    @app.get("/metrics")
    async def metrics_route() -> Response:
        return metrics.response()

    @app.get("/metrics.json")
    async def metrics_json() -> JSONResponse:
        return JSONResponse(counts())

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        p = predictor.preprocessing
        return JSONResponse({"status": "ok", "model": predictor.description, "kind": predictor.kind,
                             "classes": len(predictor.classes), "input_size": p.input_size, "recipe": p.recipe,
                             "explain": predictor.explain_note is None, "explain_note": predictor.explain_note,
                             "max_upload_bytes": settings.max_upload_bytes, "max_images": settings.max_images,
                             **counts()})

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html(predictor.description), headers={"Cache-Control": "no-cache"})

    return app
