"""Decoding any image a dataset may hold into 8-bit RGB, with errors that name the file.

Grayscale, palette, RGBA/LA, CMYK and 16-bit images are converted; EXIF orientation is applied so
that the pixels match what an image viewer shows (and what box annotations were drawn on).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import FgvcError

__all__ = ["DecodedImage", "ImageDecodeError", "decode_image", "decode_rgb", "load_rgb", "to_rgb",
           "NEEDS_CONVERSION", "EXIF_ORIENTATION"]

# Modes that load_rgb converts, with the words a report uses for them.
NEEDS_CONVERSION = {
    "L": "grayscale", "1": "grayscale", "P": "palette", "PA": "palette", "RGBA": "RGBA", "LA": "grayscale+alpha",
    "CMYK": "CMYK", "YCbCr": "YCbCr", "I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I": "32-bit int",
    "F": "32-bit float",
}
_BACKGROUND = (255, 255, 255)  # what transparent pixels become
EXIF_ORIENTATION = 0x0112  # the EXIF tag; values 2..8 mean the pixels must be flipped and/or rotated for display


class ImageDecodeError(FgvcError):
    """An image file could not be decoded. ``kind`` is a short tag used by reports."""

    def __init__(self, path: Path | str, kind: str | None = None, reason: str = "", fix: str = "") -> None:
        if kind is None:  # re-raised by a DataLoader worker, which passes the formatted message only
            super().__init__(str(path))
            self.path, self.kind, self.reason, self.fix = None, "corrupt", str(path), ""
            return
        super().__init__(f"{path}: {reason}. {fix}")
        self.path, self.kind, self.reason, self.fix = Path(path), kind, reason, fix


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha composited on white, 16-bit scaled, not clipped)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if img.mode == "I" and arr.max() <= 65535 and arr.min() >= 0:
            top = 65535.0 if arr.max() > 255 else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, _BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def load_rgb(path: str | Path, crop_bottom_px: int = 0) -> Image.Image:
    """Open, fully decode, orient and convert ``path``; raise ImageDecodeError naming it on failure."""
    return decode_rgb(path, crop_bottom_px=crop_bottom_px)[0]


class DecodedImage(NamedTuple):
    """An image as training sees it, plus what was done to it at load time."""

    rgb: Image.Image  # 8-bit RGB, oriented, banner cropped
    mode: str  # the file's own PIL mode (a key of NEEDS_CONVERSION when it was converted)
    orientation: int  # the EXIF orientation applied: 1 (none) or 2..8 (flipped and/or rotated)


def decode_rgb(path: str | Path, data: bytes | None = None, crop_bottom_px: int = 0) -> tuple[Image.Image, str]:
    """Like :func:`load_rgb`, from ``data`` when given (bytes already read); also returns the file's mode."""
    decoded = decode_image(path, data, crop_bottom_px)
    return decoded.rgb, decoded.mode


def decode_image(path: str | Path, data: bytes | None = None, crop_bottom_px: int = 0) -> DecodedImage:
    """Like :func:`decode_rgb`; also says which EXIF orientation was applied (for ``fgvc data check``)."""
    path = Path(path)
    try:
        if (len(data) if data is not None else path.stat().st_size) == 0:
            raise ImageDecodeError(path, "empty-file", "file is empty (0 bytes)", "Delete it or copy it again.")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data) if data is not None else path) as img:
                mode = img.mode
                img.load()
                orientation = img.getexif().get(EXIF_ORIENTATION, 1)
                img = ImageOps.exif_transpose(img)
                rgb = to_rgb(img)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(
            path, "decompression-bomb", f"image too large for Pillow's safety limit ({e})",
            f"Downscale the file, or raise the limit (PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}) "
            "if you trust it.",
        ) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(path, "unidentified-image", "not a readable image (unknown or corrupt header)",
                               "Delete or replace the file.") from None
    except FileNotFoundError:
        raise ImageDecodeError(path, "missing", "file not found",
                               "Check the path or re-read the dataset.") from None
    except (OSError, SyntaxError, ValueError) as e:
        kind = "truncated" if "truncated" in str(e).lower() else "corrupt"
        raise ImageDecodeError(path, kind, f"cannot decode image ({e})",
                               "Delete or replace the file.") from None
    if crop_bottom_px:
        if rgb.height <= crop_bottom_px:
            raise ImageDecodeError(path, "too-small",
                                   f"{rgb.height} px tall, cannot crop a {crop_bottom_px} px banner",
                                   "Check the file or disable banner cropping.")
        rgb = rgb.crop((0, 0, rgb.width, rgb.height - crop_bottom_px))
    # exif_transpose acts on 2..8 only; anything else (1, junk) leaves the pixels as stored
    return DecodedImage(rgb, mode, orientation if isinstance(orientation, int) and 2 <= orientation <= 8 else 1)
