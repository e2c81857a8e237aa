"""Box geometry: inclusive-pixel IoU and boxes mapped from the original image onto the model input."""

import pytest
import torch

from fgvc.data.index import Sample
from fgvc.engine.evaluate import Inference, _true_boxes_in_input
from fgvc.ops.boxes import box_iou_inclusive, paired_iou_inclusive, scale_box, true_boxes_in_input


def test_inclusive_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 9.0, 9.0]])  # 10x10 = 100 px
    b = torch.tensor([[5.0, 0.0, 14.0, 9.0], [10.0, 10.0, 12.0, 12.0]])  # overlap 5x10 = 50; none
    iou = box_iou_inclusive(a, b)
    assert iou[0, 0].item() == pytest.approx(50 / 150)
    assert iou[0, 1].item() == 0.0


def test_paired_iou_by_hand_matches_the_diagonal_of_the_table():
    a = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 9.0], [3.0, 3.0, 3.0, 3.0]], dtype=torch.float64)
    b = torch.tensor([[5.0, 0.0, 14.0, 9.0], [10.0, 10.0, 12.0, 12.0], [3.0, 3.0, 3.0, 3.0]], dtype=torch.float64)
    iou = paired_iou_inclusive(a, b)
    torch.testing.assert_close(iou, torch.tensor([50 / 150, 0.0, 1.0], dtype=torch.float64))  # one pixel: 1 px area
    torch.testing.assert_close(iou, box_iou_inclusive(a, b).diagonal())


def test_scale_box_with_different_x_and_y_factors():
    assert scale_box((0, 0, 63, 31), 448 / 64, 224 / 32) == (0, 0, 447, 223)
    assert scale_box((10, 20, 30, 40), 0.5, 2.0, inclusive=False) == (5, 40, 14, 79)


def test_true_boxes_in_input_by_hand():
    # image 200 px wide, 100 px tall onto a 64x64 input: sx = 64/200 = 0.32, sy = 64/100 = 0.64;
    # exclusive end 110 covers pixels up to 109, i.e. [0, 110) -> [0, 35.2) -> inclusive end 34.2
    boxes = true_boxes_in_input([(10.0, 20.0, 110.0, 70.0)], [(100, 200)], (64, 64))
    assert boxes.dtype == torch.float64 and boxes.shape == (1, 4)
    torch.testing.assert_close(boxes[0], torch.tensor([3.2, 12.8, 34.2, 43.8], dtype=torch.float64))
    # non-square input (h=400, w=300) from a 100 x 200 (w x h) image: sx = 3, sy = 2; a box reaching the
    # image's right and bottom edges (exclusive ends = width, height) ends on the input's last pixels
    single = true_boxes_in_input((10, 20, 100, 200), (200, 100), (400, 300))  # one box, one size: reshaped
    torch.testing.assert_close(single, torch.tensor([[30.0, 40.0, 299.0, 399.0]], dtype=torch.float64))
    whole = true_boxes_in_input((0, 0, 100, 200), (200, 100), (400, 300))
    assert paired_iou_inclusive(whole, torch.tensor([[0.0, 0.0, 299.0, 399.0]], dtype=torch.float64)).item() == 1.0


def test_true_boxes_in_input_agree_with_the_metrics_convention():
    samples = [Sample(path=None, label=0, split="train", image_id="a", box_xyxy=(10.0, 20.0, 110.0, 70.0)),
               Sample(path=None, label=0, split="train", image_id="b", box_xyxy=(0.0, 0.0, 64.0, 48.0))]
    sizes = torch.tensor([[100, 200], [48, 64]])
    result = Inference(torch.tensor([0, 1]), torch.tensor([0, 0]), torch.zeros(2, 2), orig_sizes=sizes,
                       input_size=(64, 64))
    ours = true_boxes_in_input([s.box_xyxy for s in samples], sizes, (64, 64))
    torch.testing.assert_close(ours, _true_boxes_in_input(samples, result))
    torch.testing.assert_close(ours[1], torch.tensor([0.0, 0.0, 63.0, 63.0], dtype=torch.float64))
