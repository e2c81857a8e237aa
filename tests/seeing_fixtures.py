"""Tiny trained runs for the picture and report tests, built once per test session.

ResNet-18 from scratch, one epoch, num_workers=0, on 4 synthetic classes with true boxes:
baseline and FBSD at 64 px, MMAL at 96 px (a multiple of 32 large enough for real windows).
The builders are cached per session directory, so test modules that import the fixtures share
one build.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgvc.config import load_config
from fgvc.data.synthetic import generate_dataset
from fgvc.engine.trainer import train

MODELS = {"baseline": ("plain", 64), "mmal": ("mmal", 96), "fbsd": ("fbsd", 64), "pmg": ("fbsd", 64),
          "cal": ("cal", 64)}


@functools.cache
def build_data(base: Path) -> Path:
    root = base / "seeing_data"
    generate_dataset(root, layout="competition", num_classes=4, per_class=6, size=96, seed=1, test_fraction=0.25)
    return root


@functools.cache
def build_run(base: Path, model: str) -> Path:
    data = build_data(base)
    transform, size = MODELS[model]
    overrides = {"model.name": model, "model.transform": transform, "model.input_size": size,
                 "model.backbone": "resnet18", "data.num_workers": 0, "data.val_fraction": 0.25,
                 "train.epochs": 1, "train.batch_size": 6, "train.eval_batch_size": 8, "optim.name": "sgd",
                 "optim.lr": 0.01, "train.device": "cpu"}
    config = load_config("demo", [f"{k}={v}" for k, v in overrides.items()])
    config.data.root = str(data)
    run_dir = base / f"seeing_run_{model}"
    train(config, run_dir, progress=False)
    return run_dir


def colour_mask(image: Image.Image, colour) -> np.ndarray:
    """(H, W) bool: pixels of exactly ``colour``."""
    return (np.asarray(image.convert("RGB")) == np.asarray(colour, dtype=np.uint8)).all(axis=2)


def bounds(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Inclusive (x0, y0, x1, y1) of the True pixels."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def fresh_copy(run_dir: Path, target: Path) -> Path:
    """The run's small files copied and its checkpoints linked: a run folder without evaluations."""
    target.mkdir(parents=True)
    for name in ("config.yaml", "classes.json", "split.json", "metrics.csv"):
        shutil.copy2(run_dir / name, target / name)
    for name in ("best.pt", "last.pt"):
        (target / name).symlink_to(run_dir / name)
    return target


@pytest.fixture(scope="session")
def seeing_data(tmp_path_factory) -> Path:
    return build_data(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def baseline_run(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.getbasetemp(), "baseline")


@pytest.fixture(scope="session")
def mmal_run(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.getbasetemp(), "mmal")


@pytest.fixture(scope="session")
def fbsd_run(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.getbasetemp(), "fbsd")
