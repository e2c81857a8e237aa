"""`explain`: one readable PNG per image, with the model's own boxes drawn where it put them."""

import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fgvc.data.decode import load_rgb
from fgvc.data.formats import read_dataset
from fgvc.engine.run import Run
from fgvc.errors import UserError
from fgvc.ops.boxes import scale_box
from fgvc.viz import draw
from fgvc.viz.explain import DISPLAY_SIZE, STAGE_SIZE, collect_images, explain, explain_images
from tests.seeing_fixtures import baseline_run, bounds, colour_mask, fbsd_run, mmal_run, seeing_data  # noqa: F401


def first_sample(data):
    return next(s for s in read_dataset(data).samples if s.split == "train" and s.box_xyxy is not None)


def model_output(loaded, path, **kwargs):
    x = loaded.eval_transform()(load_rgb(path))[None]
    with torch.no_grad():
        return x, loaded.trained_model(for_inference=False)(x, **kwargs)


def inside(outer, inner) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def test_mmal_picture_draws_the_model_boxes_where_its_coordinates_say(mmal_run, seeing_data, tmp_path):  # noqa: F811
    sample = first_sample(seeing_data)
    loaded = Run.open(mmal_run)
    e = next(explain_images(loaded, [sample.path], data_root=seeing_data))
    x, out = model_output(loaded, sample.path, parts=True)
    original = load_rgb(sample.path)
    w_in, h_in = x.shape[-1], x.shape[-2]
    assert max(e.image_size) == DISPLAY_SIZE
    sx, sy = e.image_size[0] / w_in, e.image_size[1] / h_in
    ox, oy = e.image_origin
    panel = (ox, oy, ox + e.image_size[0] - 1, oy + e.image_size[1] - 1)
    pixels = e.picture.crop((panel[0], panel[1], panel[2] + 1, panel[3] + 1))

    # the AOLM box is drawn last: its outermost magenta pixels are exactly the mapped box
    expected = scale_box(out.object_boxes[0].tolist(), sx, sy)
    magenta = colour_mask(pixels, draw.OBJECT_COLOUR)
    assert bounds(magenta) == expected
    assert e.boxes["object"] == [scale_box(out.object_boxes[0].tolist(), sx, sy, offset=(ox, oy))]

    # the annotated box (exclusive original pixels) in green; other outlines may hide parts of it
    true_box = scale_box(sample.box_xyxy, e.image_size[0] / original.width, e.image_size[1] / original.height,
                         inclusive=False)
    green = colour_mask(pixels, draw.TRUE_BOX_COLOUR)
    assert inside(true_box, bounds(green))
    x0, y0, x1, y1 = true_box
    perimeter = np.concatenate([green[y0, x0:x1 + 1], green[y1, x0:x1 + 1], green[y0:y1 + 1, x0], green[y0:y1 + 1, x1]])
    assert perimeter.mean() > 0.5

    # part windows, coloured by scale group: each group's colour stays inside its own windows
    windows = [scale_box(w, sx, sy) for w in out.part_boxes[0].tolist()]
    start = 0
    for g, n in enumerate(loaded.trained_model(for_inference=False).preset.picks):
        group = windows[start:start + n]
        start += n
        union = (min(w[0] for w in group), min(w[1] for w in group), max(w[2] for w in group),
                 max(w[3] for w in group))
        mask = colour_mask(pixels, draw.group_colour(g))
        assert mask.any() and inside(union, bounds(mask))

    # layout: header, then the image with the top-5 beside it, then the crop strip (object + parts)
    n_parts = sum(loaded.trained_model(for_inference=False).preset.picks)
    assert e.picture.width >= (n_parts + 1) * 120 and e.picture.height > DISPLAY_SIZE + 120
    assert e.true_class == loaded.classes.id_of(sample.label)
    written = explain(mmal_run, [sample.path], tmp_path, data_root=seeing_data)
    assert [p.name for p in written] == [sample.path.stem + ".png"]
    assert Image.open(written[0]).size == e.picture.size


def test_top5_are_the_model_probabilities(baseline_run, seeing_data):  # noqa: F811
    loaded = Run.open(baseline_run)
    sample = first_sample(seeing_data)
    e = next(explain_images(loaded, [sample.path]))
    _, out = model_output(loaded, sample.path)
    probs = torch.softmax(out.logits[0] / loaded.temperature, dim=0)  # at the run's fitted temperature
    k = min(5, len(loaded.classes))
    values, indices = probs.topk(k)
    assert [cid for cid, _ in e.top5] == [loaded.classes.id_of(int(i)) for i in indices]
    assert np.allclose([p for _, p in e.top5], values.tolist(), atol=1e-6)
    assert e.true_class == loaded.classes.id_of(sample.label)  # looked up in the run's own dataset
    assert max(e.image_size) == DISPLAY_SIZE


def test_fbsd_picture_has_three_stage_overlays_and_heatmaps(fbsd_run, seeing_data):  # noqa: F811
    loaded = Run.open(fbsd_run)
    sample = first_sample(seeing_data)
    e = next(explain_images(loaded, [sample.path]))
    assert e.image_size == (STAGE_SIZE, STAGE_SIZE)
    assert e.picture.width == 4 * STAGE_SIZE + 3 * 10
    assert e.picture.height > 2 * STAGE_SIZE
    _, out = model_output(loaded, sample.path)
    ox, oy = e.image_origin
    for stage in range(3):
        importance = out.extras[f"strip_importance{stage + 1}"][0]
        left = ox + (stage + 1) * (STAGE_SIZE + 10)
        panel = e.picture.crop((left, oy, left + STAGE_SIZE, oy + STAGE_SIZE))
        red_rows = np.nonzero(colour_mask(panel, draw.SUPPRESSED_COLOUR).any(axis=1))[0]
        assert len(red_rows), f"stage {stage + 1}: no suppressed strip drawn"
        suppressed = torch.nonzero(importance == importance.max()).flatten().tolist()
        k = importance.numel()
        # the red outline spans the suppressed strips' rows (strip j covers rows j*S/k .. (j+1)*S/k - 1)
        assert red_rows[0] == round(min(suppressed) * STAGE_SIZE / k)
        assert red_rows[-1] == round((max(suppressed) + 1) * STAGE_SIZE / k) - 1


def test_folder_gives_one_png_per_image_with_unique_names(baseline_run, seeing_data, tmp_path):  # noqa: F811
    folder = tmp_path / "in"
    images = sorted((seeing_data / "train").rglob("*.jpg"))[:3]
    for i, src in enumerate(images):
        (folder / f"sub{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / f"sub{i % 2}" / "same.jpg" if i < 2 else folder / src.name)
    (folder / ".hidden.jpg").write_bytes(images[0].read_bytes())
    (folder / "notes.txt").write_text("not an image")
    found = collect_images(folder)
    assert [name for _, name, _ in found] == [images[2].stem + ".png", "sub0__same.png", "sub1__same.png"]
    written = explain(baseline_run, folder, tmp_path / "out")
    assert [p.name for p in written] == [name for _, name, _ in found]
    for p in written:
        with Image.open(p) as img:
            assert img.format == "PNG" and img.width >= DISPLAY_SIZE + 420 and img.height >= DISPLAY_SIZE


def test_unreadable_files_are_skipped_in_folders_and_refused_when_named(baseline_run, seeing_data, tmp_path):  # noqa: F811
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(next((seeing_data / "train").rglob("*.jpg")), folder / "good.jpg")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = explain(baseline_run, folder, tmp_path / "out")
    assert [p.name for p in written] == ["good.png"]
    assert any("broken.jpg" in str(w.message) for w in caught)
    with pytest.raises(UserError, match=r"broken.jpg: not a readable image .*; fgvc explain takes image files"):
        explain(baseline_run, [folder / "broken.jpg"], tmp_path / "out2")
    with pytest.raises(UserError, match="no such image file or folder"):
        explain(baseline_run, [tmp_path / "missing.jpg"], tmp_path / "out3")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files found"):
        explain(baseline_run, tmp_path / "empty", tmp_path / "out4")


def test_grad_cam_is_the_gradient_weighted_feature_map(baseline_run, seeing_data):  # noqa: F811
    """Grad-CAM by hand: weights = spatial mean of d(logit_c)/dA, map = ReLU(sum_k w_k A_k)."""
    from fgvc.viz.explain import class_activation

    loaded = Run.open(baseline_run, device="cpu")
    model = loaded.trained_model(for_inference=False)
    sample = first_sample(seeing_data)
    x = loaded.eval_transform()(load_rgb(sample.path))[None]
    target = torch.tensor([1])
    cam = class_activation(model, model.backbone.features_out, x, target)

    feats = {}
    handle = model.backbone.features_out.register_forward_hook(lambda m, i, o: feats.setdefault("a", o))
    logit = model(x).logits[0, 1]
    handle.remove()
    grads = torch.autograd.grad(logit, feats["a"])[0]
    expected = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * feats["a"]).sum(dim=1)).detach()
    assert cam.shape == expected.shape == (1, *feats["a"].shape[-2:])
    torch.testing.assert_close(cam, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()) + 1e-12)

    e = next(explain_images(loaded, [sample.path]))  # the plain picture gains the heatmap panel
    assert e.picture.width > 2 * max(e.image_size)
