"""Images out of a request: raw bytes or multipart files, size-limited, decoded as training decodes.

Every refusal is the web layer's :class:`~fgvc.web.errors.Refusal` (status, short code, a message for a
person): an empty body or form, a file that is not an image (400), a body over the limit (413) — checked
on the declared length and again while reading (:func:`fgvc.web.bounded_body.read_body`), so a chunked
upload cannot slip past it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from torch import Tensor

from ..data.decode import ImageDecodeError, decode_rgb
from ..web.bounded_body import byte_size, read_body
from ..web.errors import Refusal

__all__ = ["Upload", "DecodedImage", "read_uploads", "decode_upload"]

IMAGE_TYPES = "JPEG, PNG, WebP, BMP, GIF or TIFF"


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes


@dataclass(frozen=True)
class DecodedImage:
    name: str
    pixels: Tensor  # uint8 (3, S, S) after the run's geometric transform
    width: int  # of the decoded image, for mapping boxes back onto it
    height: int


def too_large(limit: int) -> Refusal:
    return Refusal(413, "body_too_large", f"the request body is larger than this service's limit of "
                   f"{byte_size(limit)} (fgvc serve --max-upload-mb); send smaller images or fewer at a time")


def too_many(max_images: int) -> Refusal:
    return Refusal(400, "too_many_images", f"too many images in one request; this service takes at most {max_images} "
                                           "(fgvc serve --max-images; /explain takes one)")


def _replay(body: bytes) -> Callable[[], Any]:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def read_uploads(request: Request, limit: int, max_images: int) -> list[Upload]:
    """The images of a request: every file field of a multipart form, else the whole body as one image
    (named by the ``name`` query parameter, default ``image``)."""
    body = await read_body(request, limit, lambda _declared: too_large(limit))
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        try:
            form = await Request(request.scope, _replay(body)).form(max_files=max_images, max_fields=max_images)
        except HTTPException as e:
            if "too many files" in str(e.detail).lower():
                raise too_many(max_images) from None
            raise Refusal(400, "bad_form", f"the multipart form cannot be read ({e.detail})") from None
        try:
            files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
            uploads = [Upload(f.filename or f"file{i + 1}", await f.read()) for i, f in enumerate(files)]
        finally:
            await form.close()
        if not uploads:
            raise Refusal(400, "no_image", "the form holds no file: send each image as a file field "
                                           "(curl -F file=@bird.jpg ...)")
    else:
        if not body:
            raise Refusal(400, "empty_body", "the request has no body: send an image as the body (curl --data-binary "
                                             "@bird.jpg -H 'Content-Type: image/jpeg' ...) or as multipart file "
                                             "fields (curl -F file=@bird.jpg ...)")
        uploads = [Upload(request.query_params.get("name", "image"), body)]
    if len(uploads) > max_images:
        raise too_many(max_images)
    for upload in uploads:
        if not upload.data:
            raise Refusal(400, "empty_file", f"{upload.name!r} is empty (0 bytes); send the image's bytes")
    return uploads


def decode_upload(upload: Upload, transform: Callable[[Any], Tensor]) -> DecodedImage:
    """Decode (EXIF orientation applied, any mode to RGB) and apply the run's geometric transform."""
    try:
        rgb, _ = decode_rgb(upload.name, data=upload.data)
    except ImageDecodeError as e:
        status = 413 if e.kind == "decompression-bomb" else 400
        raise Refusal(status, "bad_image", f"{upload.name!r}: {e.reason}; send a {IMAGE_TYPES} image") from None
    return DecodedImage(upload.name, transform(rgb), rgb.width, rgb.height)
