"""AOLM, APPM and the batched crops on hand-made inputs (REFERENCE §2.4–§2.6)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from fgvc.models.mmal import aolm_boxes, cells_to_pixels, crop_resize, largest_component, select_windows
from fgvc.models.windows import WINDOW_PRESETS, WindowGeometry


def _mask(rows, h=5, w=5):
    m = torch.zeros(1, h, w, dtype=torch.bool)
    for r, c in rows:
        m[0, r, c] = True
    return m


def test_two_diagonal_pixels_are_one_component():
    comp = largest_component(_mask([(1, 1), (2, 2)]))
    assert comp.sum() == 2


def test_largest_component_wins_and_ties_go_to_the_first_in_raster_order():
    m = _mask([(0, 3), (0, 4), (3, 0), (4, 0), (4, 1)])  # sizes 2 (first) and 3
    assert largest_component(m)[0].nonzero().tolist() == [[3, 0], [4, 0], [4, 1]]
    tie = _mask([(4, 0), (4, 1), (0, 3), (0, 4)])  # both size 2; (0,3) comes first in raster order
    assert largest_component(tie)[0].nonzero().tolist() == [[0, 3], [0, 4]]


def test_empty_mask_gives_an_empty_component():
    assert not largest_component(torch.zeros(2, 4, 4, dtype=torch.bool)).any()


def test_largest_component_matches_scipy_on_random_masks():
    gen = torch.Generator().manual_seed(0)
    masks = torch.rand(32, 14, 14, generator=gen) > 0.55
    ours = largest_component(masks)
    for m, o in zip(masks.numpy(), ours.numpy(), strict=True):
        labels, n = ndimage.label(m, structure=np.ones((3, 3)))  # labels in raster order, like skimage
        areas = [(labels == i).sum() for i in range(1, n + 1)]
        expected = labels == (int(np.argmax(areas)) + 1)  # first maximum = lowest label
        assert (o == expected).all()


@pytest.mark.parametrize(
    ("cells", "pixels"),
    [((0, 0, 14, 14), [0, 0, 447, 447]), ((3, 2, 10, 12), [63, 95, 383, 319]),
     ((13, 13, 14, 14), [415, 415, 447, 447])],
)
def test_cell_box_to_pixels_matches_the_reference(cells, pixels):
    assert cells_to_pixels(torch.tensor([cells]), 32)[0].tolist() == pixels


def test_cell_box_3_2_10_12_is_rows_95_to_319_cols_63_to_383():
    x0, y0, x1, y1 = cells_to_pixels(torch.tensor([[3, 2, 10, 12]]), 32)[0].tolist()
    assert (y0, y1, x0, x1) == (95, 319, 63, 383)


def test_aolm_box_covers_all_intersecting_pixels_and_falls_back():
    fm = torch.zeros(3, 2, 14, 14)
    last = torch.zeros(3, 2, 14, 14)
    # sample 0: component rows 3-9 x cols 2-11; second mask hits two separate spots inside it
    fm[0, :, 3:10, 2:12] = 1.0
    last[0, :, 3, 2] = 1.0
    last[0, :, 9, 11] = 1.0
    # sample 1: intersection empty -> whole image
    fm[1, :, 0:2, 0:2] = 1.0
    last[1, :, 10:12, 10:12] = 1.0
    # sample 2: constant map -> nothing above the mean (the reference crashes, M5)
    boxes, fallback = aolm_boxes(fm, last, stride=32)
    assert boxes[0].tolist() == [63, 95, 383, 319]  # cells (3, 2, 10, 12)
    assert boxes[1].tolist() == boxes[2].tolist() == [0, 0, 447, 447]
    assert fallback.tolist() == [False, True, True]


def _reference_nms(scores, boxes, count, thr):
    """The authors' greedy rule per sample, written plainly (inclusive IoU, keep if IoU <= thr)."""
    order = list(np.argsort(-scores, kind="stable"))
    picks = []
    while order and len(picks) < count:
        i = order.pop(0)
        picks.append(i)
        x0, y0, x1, y1 = boxes[i]
        keep = []
        for j in order:
            a0, b0, a1, b1 = boxes[j]
            iw, ih = min(x1, a1) - max(x0, a0) + 1, min(y1, b1) - max(y0, b0) + 1
            inter = max(iw, 0) * max(ih, 0)
            union = (x1 - x0 + 1) * (y1 - y0 + 1) + (a1 - a0 + 1) * (b1 - b0 + 1) - inter
            if inter / union <= thr:
                keep.append(j)
        order = keep
    while len(picks) < count:
        picks.append(picks[-1])
    return picks


@pytest.mark.parametrize("preset", ["cub", "cars"])
def test_nms_matches_the_reference_rule_on_distinct_scores(preset):
    g = WindowGeometry(WINDOW_PRESETS[preset], 14, 14)
    scores = torch.randn(4, g.num_windows, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = select_windows(scores, g)
    boxes = g.boxes.tolist()
    for b in range(4):
        expected = []
        for offset, size, count, thr in zip(g.group_offsets, g.group_sizes, g.preset.picks,
                                            g.preset.iou_thresholds, strict=True):
            local = _reference_nms(scores[b, offset:offset + size].numpy(), boxes[offset:offset + size], count, thr)
            expected += [offset + i for i in local]
        assert ours[b].tolist() == expected


def test_nms_fill_rule_and_tie_rule():
    g = WindowGeometry(WINDOW_PRESETS["cars"], 6, 6)  # small map: the 6x6-ish first group has few windows
    scores = torch.zeros(1, g.num_windows)
    picks = select_windows(scores, g)[0].tolist()
    assert picks[0] == 0  # all tied: the lowest index
    last_group = picks[-g.preset.picks[-1]:]
    assert g.group_sizes[2] >= 1 and last_group[0] == g.group_offsets[2]
    one = WindowGeometry(WINDOW_PRESETS["cars"], 1, 1)  # one window per ratio, all overlapping
    picks = select_windows(torch.arange(one.num_windows, dtype=torch.float32)[None], one)[0].tolist()
    assert picks[:3] == [2, 2, 2]  # best of group 1 is index 2; then no candidate is left: repeat it


def test_batched_crop_equals_interpolate_of_the_slice():
    img = torch.rand(2, 3, 64, 96, dtype=torch.float64)
    boxes = torch.tensor([[[0, 0, 95, 63], [10, 5, 40, 30]], [[31, 31, 31, 40], [3, 7, 90, 60]]])
    out = crop_resize(img, boxes, (32, 24))
    assert out.shape == (2, 2, 3, 32, 24)
    for b in range(2):
        for k in range(2):
            x0, y0, x1, y1 = boxes[b, k].tolist()
            expected = F.interpolate(img[b:b + 1, :, y0:y1 + 1, x0:x1 + 1], (32, 24), mode="bilinear",
                                     align_corners=True)[0]
            assert torch.allclose(out[b, k], expected, atol=1e-10), (b, k)
