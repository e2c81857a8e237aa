"""Builders of small dataset folders for the data-layer tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.imaging import write_image


def competition_tree(root: Path, classes: dict[str, int], test: int = 0, size=(40, 30)) -> Path:
    """``classes`` maps a folder name like ``04615_Black_Albatross`` to its number of images."""
    seed = 0
    for folder, n in classes.items():
        for i in range(n):
            seed += 1
            write_image(root / "train" / folder / f"img{i}.jpg", size, seed=seed)
    for i in range(test):
        seed += 1
        write_image(root / "test" / f"t{i:03d}.jpg", size, seed=seed)
    return root


def exif_rotated_jpeg(path: Path, size=(40, 30)) -> Path:
    """A landscape JPEG whose EXIF orientation (6) says: display rotated 90 degrees clockwise."""
    img = Image.fromarray(np.random.default_rng(7).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, exif=exif)
    return path


def sixteen_bit_png(path: Path, size=(40, 30)) -> Path:
    """A 16-bit grayscale ramp: value 65535 * x / (width - 1) in column x."""
    ramp = np.round(np.linspace(0, 65535, size[0])).astype(np.uint16)
    arr = np.tile(ramp, (size[1], 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path
