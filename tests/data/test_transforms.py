import numpy as np
import pytest
import torch
from PIL import Image

from fgvc.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, build_transform, recipe
from fgvc.errors import ConfigError

STATS = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}  # plain takes the backbone's: the caller must give them


def _image(w=120, h=90, value=None):
    if value is not None:
        return Image.new("RGB", (w, h), (value,) * 3)
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("recipe", ["fbsd", "mmal", "plain"])
@pytest.mark.parametrize("train", [True, False])
def test_output_shape_at_any_size(recipe, train):
    for size in (64, 96):
        out = build_transform(recipe, size, train, **STATS)(_image())
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
    full = build_transform(recipe, 96, False, **STATS)(img)
    uint8 = build_transform(recipe, 96, False, output="uint8", **STATS)(img)
    assert uint8.dtype == torch.uint8
    split = build_batch_transform(recipe, train=False, **STATS)(uint8[None])[0]
    assert torch.allclose(split, full, rtol=0, atol=1e-6)  # same arithmetic, up to float rounding


@pytest.mark.parametrize("order", [(0, 1, 2), (1, 0, 2), (2, 0, 1), (1, 2, 0)])
def test_batched_color_jitter_matches_torchvision_functionals_in_every_order(order):
    from torchvision.transforms.v2 import functional as TF

    from fgvc.data.transforms import color_jitter

    x = torch.rand(2, 3, 16, 20, generator=torch.Generator().manual_seed(0))
    factors = torch.tensor([[1.15, 0.85], [0.9, 1.2], [0.6, 1.4]])  # brightness, contrast, saturation per image
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    ours = color_jitter(x, factors, torch.tensor([order, order[::-1]]))
    for i, sample_order in enumerate((order, order[::-1])):
        want = x[i]
        for op in sample_order:
            want = adjust[op](want, float(factors[op, i]))
        assert torch.allclose(ours[i], want, atol=1e-6)


def test_the_cal_recipe_jitters_brightness_and_saturation_only():
    cal = recipe("cal").at(448)
    assert (cal.resize, cal.crop, cal.train_crop_padding, cal.train_jitter) == ((512, 512), (448, 448), 0,
                                                                                 (0.126, 0.0, 0.5))
    jitter = [s for s in cal.transform(True).transforms if type(s).__name__ == "ColorJitter"][0]
    assert (jitter.brightness, jitter.contrast, jitter.saturation) == ((0.874, 1.126), None, (0.5, 1.5))
    # a checkpoint written before saturation existed stored one number: brightness and contrast
    old = {**recipe("mmal").at(96).to_dict(), "train_jitter": 0.2}
    assert type(cal).from_dict(old).train_jitter == (0.2, 0.2, 0.0)


def test_train_batch_transform_jitters_each_sample_on_its_own():
    from fgvc.data.transforms import build_batch_transform

    img = build_transform("mmal", 32, False, output="uint8")(_image())
    batch = torch.stack([img, img])
    torch.manual_seed(0)
    out = build_batch_transform("mmal", train=True)(batch)
    assert out.dtype == torch.float32 and not torch.equal(out[0], out[1])
    assert torch.equal(build_batch_transform("mmal", train=False)(batch)[0],
                       build_batch_transform("plain", train=False, **STATS)(batch)[1])  # eval: no jitter, same stats


def test_plain_without_the_backbones_statistics_is_an_error_not_imagenet():
    with pytest.raises(ConfigError, match="the 'plain' recipe normalises with the backbone's statistics"):
        build_transform("plain", 64, False)


def test_the_recipes_are_explicit_geometry():
    fbsd = recipe("fbsd").at(448)
    assert (fbsd.resize, fbsd.crop, fbsd.mean, fbsd.train_crop_padding) == ((550, 550), (448, 448), (0.5,) * 3, 8)
    mmal = recipe("mmal").at(448)
    assert (mmal.resize, mmal.crop, mmal.mean, mmal.train_jitter) == ((448, 448), None, IMAGENET_MEAN,
                                                                       (0.2, 0.2, 0.0))
    plain = recipe("plain").at(96, (0.1, 0.2, 0.3), (1, 1, 1))
    assert (plain.resize, plain.crop, plain.mean, plain.std) == ((96, 96), None, (0.1, 0.2, 0.3), (1.0, 1.0, 1.0))
    assert (fbsd.whole_image, plain.whole_image, fbsd.input_size) == (False, True, 448)


@pytest.mark.parametrize("name", ["fbsd", "mmal", "plain"])
def test_preprocessing_round_trips_through_its_dict_and_json(name):
    import json

    p = recipe(name).at(96, **STATS)
    data = json.loads(json.dumps(p.to_dict()))
    assert Preprocessing.from_dict(data) == p
    assert (data["value_scale"], data["channel_order"], data["interpolation"], data["antialias"]) == (
        255.0, "RGB", "bilinear", True)


def test_a_recipe_name_alone_still_resolves():
    """Checkpoints and exports of older fgvc carry only the recipe name, the size and the statistics."""
    old = {"recipe": "fbsd", "input_size": 64, "mean": [0.5] * 3, "std": [0.5] * 3, "whole_image": False}
    assert Preprocessing.from_dict(old) == recipe("fbsd").at(64)


@pytest.mark.parametrize("name", ["transfg_cars", "pim"])
def test_recipes_with_training_augmentations_round_trip(name):
    import json

    p = recipe(name).at(96)
    assert p.train_augment  # what the test is about: the named steps are stored and read back
    assert Preprocessing.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def _authors_pipeline(resize: int, size: int, *extra):
    """The authors' training pipeline as torchvision's v2 ops with their parameters, on the 8-bit image: pins the
    order and the parameters (not their PIL code's pixels)."""
    from torchvision.transforms import v2

    return v2.Compose([v2.ToImage(), v2.Resize((resize, resize), antialias=True), v2.RandomCrop(size, padding=0),
                       v2.RandomHorizontalFlip(), *extra])


@pytest.mark.parametrize("seed", range(6))
def test_pim_training_blurs_and_sharpens_as_the_authors(seed):
    """PIM's train pipeline: flip, then GaussianBlur(5, sigma 0.1-5) with p 0.1, then sharpness 1.5 with p 0.1 (I6):
    the same random draws in the same order give the same pixels as torchvision's ops with their parameters."""
    from torchvision.transforms import v2

    ours = recipe("pim").at(64).transform(True, output="uint8")
    theirs = _authors_pipeline(85, 64, v2.RandomApply([v2.GaussianBlur((5, 5), sigma=(0.1, 5.0))], p=0.1),
                               v2.RandomAdjustSharpness(1.5, p=0.1))
    image = _image(120, 90)
    torch.manual_seed(seed)
    a = ours(image)
    torch.manual_seed(seed)
    assert torch.equal(a, theirs(image))
    assert not any("Blur" in type(t).__name__ for t in recipe("pim").at(64).transform(False, "uint8").transforms)


def test_pim_blur_and_sharpen_do_fire(monkeypatch):
    """With every coin landing on 'apply' (torch.rand -> 0), the crop is blurred then sharpened: it differs from
    the crop alone and equals torchvision's blur then sharpness (always applied) on it."""
    from torchvision.transforms import v2

    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.zeros(*a))
    image = _image(120, 90)
    runs = {}
    for name, pipeline in {
        "ours": recipe("pim").at(64).transform(True, output="uint8"),
        "crop": _authors_pipeline(85, 64),
        "both": _authors_pipeline(85, 64, v2.RandomApply([v2.GaussianBlur((5, 5), sigma=(0.1, 5.0))], p=1.0),
                                  v2.RandomAdjustSharpness(1.5, p=1.0)),
    }.items():
        torch.manual_seed(0)
        runs[name] = pipeline(image)
    assert torch.equal(runs["ours"], runs["both"])
    assert not torch.equal(runs["ours"], runs["crop"])


@pytest.mark.parametrize("seed", range(4))
def test_transfg_cars_adds_autoaugment_imagenet_policy(seed):
    """TransFG's Cars pipeline (V9): after the flip, AutoAugment's ImageNet policy with a grey fill."""
    from torchvision.transforms import v2

    ours = recipe("transfg_cars").at(64).transform(True, output="uint8")
    theirs = _authors_pipeline(86, 64, v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, fill=128))
    image = _image(120, 90)
    torch.manual_seed(seed)
    a = ours(image)
    torch.manual_seed(seed)
    assert torch.equal(a, theirs(image))
    assert recipe("transfg").at(64).train_augment == ()


def test_an_unknown_training_augmentation_is_one_line():
    data = recipe("pim").at(64).to_dict()
    data["train_augment"] = ["mixup"]
    with pytest.raises(ConfigError, match="unknown training augmentation 'mixup'; known: autoaugment_imagenet"):
        Preprocessing.from_dict(data)
    data["train_augment"] = "autoaugment_imagenet"  # a name where a list belongs
    with pytest.raises(ConfigError, match="train_augment must be a list of names, got 'autoaugment_imagenet'"):
        Preprocessing.from_dict(data)
    del data["train_augment"]  # written before augmentations existed: none
    assert Preprocessing.from_dict(data).train_augment == ()
