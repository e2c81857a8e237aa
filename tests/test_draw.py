"""Drawing on images: boxes land on exactly the pixels their inclusive coordinates name."""

import numpy as np
import pytest
from PIL import Image

from fgvc.ops.boxes import scale_box
from fgvc.viz import draw
from tests.seeing_fixtures import bounds, colour_mask

RED = (255, 0, 0)


@pytest.mark.parametrize("width", [1, 3])
@pytest.mark.parametrize("halo", [False, True])
def test_drawn_box_covers_exactly_its_inclusive_coordinates(width, halo):
    image = Image.new("RGB", (50, 40), (255, 255, 255))
    box = (5, 7, 30, 20)
    draw.draw_box(image, box, RED, width=width, halo=halo)
    mask = colour_mask(image, RED)
    assert bounds(mask) == box
    x0, y0, x1, y1 = box
    # the outline is `width` px thick on every side and nothing red is outside the box
    assert mask[y0, x0:x1 + 1].all() and mask[y1, x0:x1 + 1].all() and mask[y0:y1 + 1, x0].all()
    assert mask[y0:y1 + 1, x1].all() and mask[y0 + width - 1, x0 + width:x1 - width + 1].all()
    assert not mask[y0 + width, x0 + width:x1 - width + 1].any()
    assert mask.sum() == (x1 - x0 + 1) * (y1 - y0 + 1) - (x1 - x0 + 1 - 2 * width) * (y1 - y0 + 1 - 2 * width)


def test_box_outside_the_image_is_clipped_not_wrapped():
    image = Image.new("RGB", (20, 20), (255, 255, 255))
    draw.draw_box(image, (-5, 3, 40, 12), RED, width=1, halo=False)
    assert bounds(colour_mask(image, RED)) == (0, 3, 19, 12)
    untouched = Image.new("RGB", (20, 20), (255, 255, 255))
    draw.draw_box(untouched, (25, 25, 30, 30), RED)
    assert not colour_mask(untouched, RED).any()


@pytest.mark.parametrize("factor", [2, 3, 7])
def test_scale_box_matches_the_enlarged_picture_of_the_box(factor):
    small = Image.new("RGB", (16, 12), (255, 255, 255))
    box = (3, 2, 9, 10)  # inclusive
    draw.draw_box(small, box, RED, width=1, halo=False)
    big = small.resize((16 * factor, 12 * factor), Image.Resampling.NEAREST)
    expected = scale_box(box, factor)
    assert bounds(colour_mask(big, RED)) == expected
    assert scale_box((3, 2, 10, 11), factor, inclusive=False) == expected  # exclusive ends, same pixels
    assert scale_box(box, factor, offset=(5, 9)) == (expected[0] + 5, expected[1] + 9, expected[2] + 5,
                                                     expected[3] + 9)


def test_windows_are_coloured_by_group_and_numbered():
    image = Image.new("RGB", (120, 60), (0, 0, 0))
    windows = [(2, 2, 30, 30), (40, 2, 70, 40), (80, 10, 110, 50), (5, 35, 35, 58), (45, 45, 75, 58)]
    draw.draw_windows(image, windows, group_sizes=(2, 3))
    first, second = colour_mask(image, draw.group_colour(0)), colour_mask(image, draw.group_colour(1))
    assert bounds(first) == (2, 2, 70, 40)  # union of windows 1 and 2
    assert bounds(second) == (5, 10, 110, 58)  # union of windows 3-5
    # each window carries a tag at its top-left corner: a patch of its colour with the number written in it
    for x0, y0, _, _ in windows[:2]:
        patch = first[y0 + 2:y0 + 16, x0 + 2:x0 + 11]
        assert 0.4 < patch.mean() < 1.0
    two = np.asarray(image)[4:18, 42:51]
    assert (two.sum(axis=2) < 100).sum() > 10  # dark ink of the "2" on the light orange tag
    with pytest.raises(ValueError, match="5 windows but the groups hold 4"):
        draw.draw_windows(image, windows, group_sizes=(2, 2))


def test_strip_overlay_marks_the_suppressed_strip_and_shades_by_importance():
    image = Image.new("RGB", (90, 80), (128, 128, 128))
    out = draw.draw_strips(image, [0.1, 0.6, 0.3], [0, 20, 50, 80], suppressed=[1])
    assert out.size == image.size
    red = colour_mask(out, draw.SUPPRESSED_COLOUR)
    assert bounds(red) == (0, 20, 89, 49)
    pixels = np.asarray(out).astype(int)
    orange = lambda rows: (pixels[rows, 5:40, 0] - pixels[rows, 5:40, 2]).mean()  # noqa: E731  red minus blue
    assert orange(slice(25, 45)) > orange(slice(55, 75)) > orange(slice(3, 17))
    with pytest.raises(ValueError, match="3 strips need 4 row edges"):
        draw.draw_strips(image, [0.1, 0.6, 0.3], [0, 40, 80])


def test_heatmap_is_hot_where_the_map_is_high():
    heat = np.zeros((4, 4))
    heat[0, 0] = 5.0
    out = draw.heatmap_overlay(Image.new("RGB", (64, 64), (128, 128, 128)), heat, alpha=1.0)
    px = np.asarray(out).astype(int)
    assert out.size == (64, 64)
    assert px[2, 2, 0] > 100 and px[2, 2, 1] < 50 and px[2, 2, 2] < 50  # jet: top of the scale is (dark) red
    assert px[60, 60, 2] > 100 and px[60, 60, 0] < 50  # bottom is blue
    flat = draw.heatmap_overlay(Image.new("RGB", (8, 8)), np.ones((2, 2)))
    assert flat.size == (8, 8)  # a constant map does not divide by zero


def test_panels_stack_and_grids_have_the_expected_sizes():
    tiles = [(Image.new("RGB", (30, 50), c), str(i), c) for i, c in enumerate([(255, 0, 0), (0, 255, 0)])]
    strip = draw.crop_strip(tiles, size=100, gap=6)
    assert strip.size == (206, 100)
    assert colour_mask(strip, (0, 255, 0))[50, 106 + 2]  # second tile's frame
    grid = draw.image_grid([(Image.new("RGB", (40, 20)), "a\nb")] * 5, columns=3, tile=50, gap=4)
    assert grid.size == (3 * 50 + 2 * 4, 2 * (50 + 4 + 32) + 4)
    panel = draw.topk_panel([("x", 0.7, False), ("y", 0.2, True)], width=300)
    assert panel.width == 300
    assert colour_mask(panel, (60, 170, 60)).any()  # the true class's bar is green
    fitted = draw.fit_image(Image.new("RGB", (200, 100)), 448)
    assert fitted.size == (448, 224)
    stacked = draw.vstack([draw.hstack([fitted, strip], gap=10), grid], gap=10)
    assert stacked.size == (448 + 10 + 206, 224 + 10 + grid.height)
