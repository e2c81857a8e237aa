"""Metrics on hand-made inference results."""

from pathlib import Path

import pytest
import torch

from fgvc.data.classes import ClassTable
from fgvc.data.index import Sample
from fgvc.engine.evaluate import Inference, compute_metrics

CLASSES = ClassTable(("04615", "04620", "04700"), ("a", "b", "c"))


def _result(logits, labels, boxes=None, orig=(100, 200), size=(50, 50)):
    n = len(labels)
    return Inference(indices=torch.arange(n), labels=torch.tensor(labels), logits=torch.tensor(logits),
                     branch_logits={"main": torch.tensor(logits)}, object_boxes=boxes,
                     orig_sizes=torch.tensor([orig] * n), input_size=size)


def test_top1_top5_per_class_and_confusion_by_hand():
    logits = [[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [3.0, 1.0, 2.0], [1.0, 2.0, 3.0]]
    m = compute_metrics(_result(logits, [0, 1, 2, 2]), CLASSES, topk=2)
    assert m["top1"] == pytest.approx(0.75)  # sample 2 (class 2) predicted 0
    assert m["top2"] == pytest.approx(1.0)  # class 2 is its second choice
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert m["per_class"]["04700"] == {"correct": 1, "total": 2, "accuracy": 0.5}
    assert m["mean_class_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["most_confused"] == [{"true": "04700", "predicted": "04615", "count": 1}]
    assert m["acc_main"] == pytest.approx(0.75)


def test_unlabelled_images_are_left_out():
    m = compute_metrics(_result([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [0, -1]), CLASSES)
    assert m["images"] == 1 and m["top1"] == 1.0


def test_localisation_accuracy_with_the_inclusive_convention():
    # original 200 wide x 100 tall, input 50 x 50: x scales by 1/4, y by 1/2
    samples = [Sample(Path("a.jpg"), 0, "test", "a.jpg", (0.0, 0.0, 200.0, 100.0)),  # whole image
               Sample(Path("b.jpg"), 1, "test", "b.jpg", (0.0, 0.0, 100.0, 50.0))]  # top-left quarter
    boxes = torch.tensor([[0.0, 0.0, 49.0, 49.0], [0.0, 0.0, 49.0, 49.0]])  # AOLM: whole image both times
    m = compute_metrics(_result([[1.0, 0, 0], [0, 1.0, 0]], [0, 1], boxes=boxes), CLASSES, samples,
                        localisation=True)
    # sample 2: truth (0, 0, 24, 24) inclusive = 625 px inside 2500 px -> IoU 0.25
    assert m["localisation_accuracy"] == pytest.approx(0.5)
    assert m["mean_iou"] == pytest.approx((1.0 + 0.25) / 2)
