"""Small image files for tests: real encoders, generated content, no downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(
    path: Path, size: tuple[int, int] = (40, 30), seed: int = 0, mode: str = "RGB", fmt: str | None = None
) -> Path:
    """Write a noisy image of ``size`` = (width, height) in ``mode``; the format follows the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    img = rgb if mode == "RGB" else rgb.convert(mode)
    img.save(path, format=fmt)
    return path
