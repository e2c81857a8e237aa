"""The HTTP service: ``POST /predict``, ``POST /explain``, ``GET /healthz``, ``GET /metrics`` and the page
at ``GET /``.

Every reply but the page is JSON; errors carry ``{"error": code, "message": text for a person}``.
Decoding runs in worker threads, the model in the batcher's inference thread: the event loop only
moves bytes, so a slow forward pass never stops the service from accepting requests.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..ops.boxes import scale_box
from .batcher import DynamicBatcher, ImageResult
from .page import page_html
from .predictors import Predictor
from .settings import ServeSettings
from .uploads import DecodedImage, Refusal, decode_upload, read_uploads

__all__ = ["ServeSettings", "create_app"]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


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

    @app.exception_handler(Refusal)
    async def _refusal(_request: Request, refusal: Refusal) -> JSONResponse:
        requests["refused"] += 1
        return _error(refusal.status, refusal.code, refusal.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        messages = {404: f"no such page: {request.url.path} (try POST /predict, GET /healthz or the page at /)",
                    405: f"{request.method} is not allowed on {request.url.path}"}
        return _error(error.status_code, f"http_{error.status_code}", messages.get(error.status_code,
                                                                                  str(error.detail)))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", "; ".join(str(e.get("msg", e)) for e in error.errors()) or "invalid")

    @app.exception_handler(Exception)
    async def _bug(_request: Request, error: Exception) -> JSONResponse:
        return _error(500, "internal_error", f"answering this request failed ({type(error).__name__}: "
                                             f"{str(error)[:200]}); this is a bug in fgvc, please report it")

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

    def metrics() -> dict:
        return {**batcher.stats.to_dict(), "requests": dict(requests), "max_batch": settings.max_batch,
                "batch_window_ms": settings.batch_window_ms}

    @app.get("/metrics")
    async def metrics_route() -> JSONResponse:
        return JSONResponse(metrics())

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        p = predictor.preprocessing
        return JSONResponse({"status": "ok", "model": predictor.description, "kind": predictor.kind,
                             "classes": len(predictor.classes), "input_size": p.input_size, "recipe": p.recipe,
                             "explain": predictor.explain_note is None, "explain_note": predictor.explain_note,
                             "max_upload_bytes": settings.max_upload_bytes, "max_images": settings.max_images,
                             **metrics()})

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html(predictor.description), headers={"Cache-Control": "no-cache"})

    return app
