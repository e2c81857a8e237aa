import numpy as np
import pytest
import torch
from PIL import Image

from fgvc.data.transforms import build_transform
from fgvc.errors import ConfigError


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
    with pytest.raises(ConfigError, match="known: fbsd, mmal, plain"):
        build_transform("nts", 64, True)


@pytest.mark.parametrize("recipe", ["fbsd", "mmal", "plain"])
def test_split_eval_pipeline_equals_the_full_one(recipe):
    from fgvc.data.transforms import build_batch_transform

    img = _image(150, 110)
    full = build_transform(recipe, 96, False)(img)
    uint8 = build_transform(recipe, 96, False, output="uint8")(img)
    assert uint8.dtype == torch.uint8
    split = build_batch_transform(recipe, train=False)(uint8[None])[0]
    assert torch.allclose(split, full, rtol=0, atol=1e-6)  # same arithmetic, up to float rounding


@pytest.mark.parametrize("brightness_first", [True, False])
def test_batched_jitter_matches_torchvision_functionals(brightness_first):
    from torchvision.transforms.v2 import functional as TF

    from fgvc.data.transforms import jitter_brightness_contrast

    x = torch.rand(2, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    b, c = torch.tensor([1.15, 0.85]), torch.tensor([0.9, 1.2])
    ours = jitter_brightness_contrast(x, b, c, torch.tensor([brightness_first] * 2))
    for i in range(2):
        if brightness_first:
            want = TF.adjust_contrast(TF.adjust_brightness(x[i], float(b[i])), float(c[i]))
        else:
            want = TF.adjust_brightness(TF.adjust_contrast(x[i], float(c[i])), float(b[i]))
        assert torch.allclose(ours[i], want, atol=1e-6)


def test_train_batch_transform_jitters_each_sample_on_its_own():
    from fgvc.data.transforms import build_batch_transform

    img = build_transform("mmal", 32, False, output="uint8")(_image())
    batch = torch.stack([img, img])
    torch.manual_seed(0)
    out = build_batch_transform("mmal", train=True)(batch)
    assert out.dtype == torch.float32 and not torch.equal(out[0], out[1])
    assert torch.equal(build_batch_transform("mmal", train=False)(batch)[0],
                       build_batch_transform("plain", train=False)(batch)[1])  # eval: no jitter, same stats
