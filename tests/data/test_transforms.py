import numpy as np
import pytest
import torch
from PIL import Image

from fgvc.data.transforms import build_transform


def _image(w=120, h=90, value=None):
    if value is not None:
        return Image.new("RGB", (w, h), (value,) * 3)
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("recipe", ["fbsd", "mmal", "plain"])
@pytest.mark.parametrize("train", [True, False])
def test_output_shape_at_any_size(recipe, train):
    for size in (64, 96):
        out = build_transform(recipe, size, train)(_image())
        assert out.shape == (3, size, size) and out.dtype == torch.float32


def test_normalisation_statistics_per_recipe():
    grey = _image(value=255)
    assert torch.allclose(build_transform("fbsd", 64, False)(grey), torch.ones(3, 64, 64))  # (1 - 0.5) / 0.5
    mmal = build_transform("mmal", 64, False)(grey)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(mmal[:, 0, 0], expected, atol=1e-6)


def test_fbsd_eval_is_resize_550_over_448_then_centre_crop():
    img = _image(200, 100)
    out = build_transform("fbsd", 448, False, mean=(0, 0, 0), std=(1, 1, 1))(img)
    resized = np.asarray(img.resize((550, 550), Image.BILINEAR), dtype=np.float32) / 255
    centre = torch.from_numpy(resized[51:499, 51:499]).permute(2, 0, 1)
    assert (out - centre).abs().mean() < 0.01  # antialiased tensor resize vs PIL: same picture


def test_unknown_recipe():
    with pytest.raises(ValueError, match="known: fbsd, mmal, plain"):
        build_transform("nts", 64, True)
