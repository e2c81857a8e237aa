"""Window geometry against the reference's measured tables (REFERENCE §2.1, §2.5)."""

import pytest
import torch
import torch.nn.functional as F

from fgvc.models.mmal import window_scores
from fgvc.models.windows import WINDOW_PRESETS, WindowGeometry


def _ref(coords):
    """Reference coordinates are [x0, y0, x1, y1] with x = row; ours put the column first."""
    r0, c0, r1, c1 = coords
    return [c0, r0, c1, r1]


@pytest.mark.parametrize(
    ("preset", "per_ratio", "groups"),
    [
        ("cub", [121, 120, 120, 81, 80, 80, 49, 45, 45, 48, 48, 40, 40], (361, 241, 315)),
        ("cars", [81, 80, 80, 49, 45, 45, 48, 48, 25, 24, 24, 21, 21], (241, 235, 115)),
    ],
)
def test_window_counts_at_448(preset, per_ratio, groups):
    g = WindowGeometry(WINDOW_PRESETS[preset], 14, 14)
    counts = [(14 - a + 1) * (14 - b + 1) for group in g.ratios for a, b in group]
    assert counts == per_ratio
    assert g.group_sizes == groups
    assert g.num_windows == sum(groups)
    assert g.group_offsets == (0, groups[0], groups[0] + groups[1])


@pytest.mark.parametrize(
    ("preset", "table"),
    [
        ("cub", {0: [0, 0, 127, 127], 1: [0, 31, 127, 159], 120: [319, 319, 447, 447], 121: [0, 0, 95, 159],
                 361: [0, 0, 191, 191], 602: [0, 0, 255, 255], 916: [127, 223, 447, 447]}),
        ("cars", {0: [0, 0, 191, 191], 1: [0, 31, 191, 223], 80: [255, 255, 447, 447], 81: [0, 0, 159, 223],
                  241: [0, 0, 255, 255], 590: [63, 191, 447, 447]}),
    ],
)
def test_window_coordinates_match_the_reference(preset, table):
    boxes = WindowGeometry(WINDOW_PRESETS[preset], 14, 14).boxes
    for index, coords in table.items():
        assert boxes[index].tolist() == _ref(coords), index


def test_cub_window_121_is_rows_0_to_95_cols_0_to_159():
    x0, y0, x1, y1 = WindowGeometry(WINDOW_PRESETS["cub"], 14, 14).boxes[121].tolist()
    assert (y0, y1, x0, x1) == (0, 95, 0, 159)


def test_window_order_is_avgpool_row_major_order():
    """Scores of the integral-image path equal the reference's per-ratio AvgPool2d over every
    channel followed by the channel sum, concatenated in preset order."""
    g = WindowGeometry(WINDOW_PRESETS["cub"], 14, 14)
    fm = torch.rand(2, 16, 14, 14, dtype=torch.float64)
    reference = torch.cat([F.avg_pool2d(fm, (a, b), stride=1).sum(dim=1).flatten(1)
                           for group in g.ratios for a, b in group], dim=1)
    assert torch.allclose(window_scores(fm, g), reference, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("side", [7, 10, 14, 18])
def test_other_map_sizes_give_valid_windows(side):
    for preset in ("cub", "cars"):
        g = WindowGeometry(WINDOW_PRESETS[preset], side, side)
        boxes = g.boxes
        assert boxes.min() >= 0 and boxes[:, 2:].max() == 32 * side - 1
        assert all(size > 0 for size in g.group_sizes)
        assert len(g.suppression) == 3 and g.suppression[0].shape == (g.group_sizes[0],) * 2
    if side == 14:
        assert WindowGeometry(WINDOW_PRESETS["cub"], side, side).ratios == WINDOW_PRESETS["cub"].groups


def test_ratios_scale_with_the_map():
    g = WindowGeometry(WINDOW_PRESETS["cub"], 7, 7)
    assert g.ratios[0] == ((2, 2), (2, 3), (3, 2))  # 4x4, 3x5, 5x3 at half resolution, halves round up
    assert g.ratios[2][0] == (4, 4)
