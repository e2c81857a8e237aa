"""The report's plots: confusion-matrix order and picture, training curves, per-class accuracy."""

import io

import numpy as np
import pytest
from PIL import Image

from fgvc.viz import plots


def test_confusion_order_puts_confused_classes_together():
    rng = np.random.default_rng(0)
    blocks = [[0, 1, 2], [3, 4], [5], [6, 7, 8, 9], [10], [11]]
    n = 12
    confusion = np.diag(np.full(n, 20))
    for block in blocks:
        for a in block:
            for b in block:
                if a != b:
                    confusion[a, b] = rng.integers(1, 5)
    perm = rng.permutation(n)
    shuffled = confusion[np.ix_(perm, perm)]
    order = plots.confusion_order(shuffled)
    assert sorted(order) == list(range(n))
    position = {int(perm[k]): i for i, k in enumerate(order)}  # original class -> place in the new order
    for block in blocks:
        places = sorted(position[c] for c in block)
        assert places[-1] - places[0] == len(block) - 1, (block, places)
    singletons = [k for k in order if int(perm[k]) in (5, 10, 11)]
    assert order[-3:] == sorted(singletons)  # never-confused classes last, in index order
    assert plots.confusion_order(shuffled) == order  # deterministic


def test_confusion_picture_for_200_classes_is_readable_size():
    rng = np.random.default_rng(1)
    n = 200
    confusion = np.diag(rng.integers(5, 30, n)) + (rng.random((n, n)) < 0.01) * rng.integers(1, 4, (n, n))
    png = plots.plot_confusion(confusion, [f"{i:03d}" for i in range(n)])
    image = Image.open(io.BytesIO(png))
    image.verify()
    width, height = Image.open(io.BytesIO(png)).size
    assert 1000 <= width <= 2000 and 1000 <= height <= 1600
    small = Image.open(io.BytesIO(plots.plot_confusion([[3, 1], [0, 4]], ["a", "b"])))
    assert small.format == "PNG" and small.size[0] >= 500
    with pytest.raises(ValueError, match="3 labels"):
        plots.plot_confusion([[1, 0], [0, 1]], ["a", "b", "c"])


def test_training_curves_and_per_class_plots():
    rows = [{"step": float(e), "train/loss": 2.0 / e, "train/acc": 0.2 * e, "val/loss": 2.2 / e, "val/top1": 0.15 * e,
             "val/acc_raw": 0.1 * e, "val/acc_object": 0.12 * e, "lr/all": 0.01 / e} for e in range(1, 5)]
    png = plots.plot_training_curves(rows)
    width, height = Image.open(io.BytesIO(png)).size
    assert width == 3 * 420 and height == 340  # loss, accuracy, learning rate: 4.2 x 3.4 in each at 100 dpi
    assert plots.plot_training_curves([]) is None
    png = plots.plot_per_class_accuracy(["a", "b", "c"], [0.5, 1.0, 0.0])
    assert Image.open(io.BytesIO(png)).size == (600, 380)
