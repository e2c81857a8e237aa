"""``fgvc explain``: one picture per image of what a trained model looked at.

Every picture has a header (file, model, prediction, true class when known) and the top-5
classes with their probabilities (at the run's temperature) and names. Then, by model:

The model spec's ``pictures`` say what else a model can show (:class:`~fgvc.models.registry.Picture`):

* ``Picture.WINDOWS``: the image with the object box, the part windows numbered in selection
  order and coloured by scale group, the annotated box in another colour when the image belongs
  to a dataset with boxes; below, the object crop and the part crops as a strip.
* ``Picture.STRIPS``: per stage, the model's input with the strip importances (softmax b) as a
  translucent overlay, the suppressed strip outlined in red; below, each stage's activation
  (channel mean of the stage's feature map, the map the strips score) as a heatmap.
* none: the image.

Boxes come from ``ModelOutput`` (inclusive input pixels) and are mapped onto the displayed
image with :func:`fgvc.ops.boxes.scale_box`. For a whole-image recipe (the input is the image resized)
the displayed image is the original file, aspect kept, and crops are cut from it at full
resolution; for a cropping recipe it is the crop the model saw.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..data.classes import ClassTable
from ..data.decode import ImageDecodeError, load_rgb
from ..data.index import Sample, is_hidden, is_image_file
from ..data.transforms import Preprocessing
from ..engine.calibration import scaled_probabilities
from ..engine.run import Run
from ..errors import UserError
from ..fileio import atomic_open
from ..models.output import ModelOutput
from ..models.registry import Picture
from ..ops.boxes import paired_iou_inclusive, scale_box, true_boxes_in_input
from . import draw

__all__ = ["Explanation", "explain", "explain_images", "collect_images", "describe", "DISPLAY_SIZE"]

DISPLAY_SIZE = 448  # px, longer side of the annotated image (whole-image recipes)
STAGE_SIZE = 300  # px, side of each stage panel of a "strips" picture
TILE_SIZE = 120  # px, side of each crop in the crop strip of a "windows" picture
GAP = 10


@dataclass
class Explanation:
    """One picture and where things were drawn on it (picture pixels, inclusive boxes)."""

    path: Path
    picture: Image.Image
    top5: list[tuple[str, float]]  # (class id, probability), best first
    true_class: str | None = None
    image_origin: tuple[int, int] = (0, 0)  # top-left corner of the annotated image in the picture
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the annotated image
    boxes: dict[str, list[tuple[int, int, int, int]]] = field(default_factory=dict)


# -- inputs -------------------------------------------------------------------------------------

def collect_images(images: Sequence[str | Path] | str | Path) -> list[tuple[Path, str, bool]]:
    """``(image path, output file name, given explicitly)`` for files and folders (searched
    recursively, hidden files skipped, sorted). Output names are unique: a file inside a folder is
    named after its path below that folder (``class_a__img_001.png``)."""
    if isinstance(images, str | Path):
        images = [images]
    found: list[tuple[Path, str, bool]] = []
    for item in map(Path, images):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and is_image_file(p)
                           and not any(is_hidden(Path(part)) for part in p.relative_to(item).parts))
            if not files:
                raise UserError(f"{item}: no image files found (looked for {', '.join(sorted({'.jpg', '.png'}))} "
                                "and the other usual suffixes, in sub-folders too)")
            found += [(p, "__".join(p.relative_to(item).with_suffix("").parts), False) for p in files]
        elif item.is_file():
            found.append((item, item.stem, True))
        else:
            raise UserError(f"{item}: no such image file or folder")
    taken: dict[str, int] = {}
    named = []
    for path, stem, explicit in found:
        taken[stem] = taken.get(stem, 0) + 1
        suffix = f"-{taken[stem]}" if taken[stem] > 1 else ""
        named.append((path, f"{stem}{suffix}.png", explicit))
    return named


def _dataset_lookup(run: Run, data_root: str | Path | None,
                    paths: Sequence[Path]) -> tuple[dict[Path, Sample], int]:
    """Samples of the dataset at ``data_root`` (default: the run's data root when the images lie
    inside it) by resolved path, and the rows its images lose at load time (Aircraft's banner); read
    by the run (:meth:`Run.dataset`: once, with its format and class checks)."""
    root = data_root
    if root is None and run.config.data.root:
        candidate = Path(run.config.data.root).resolve()
        if any(candidate in p.resolve().parents for p in paths):
            root = candidate
    if root is None or not Path(root).is_dir():
        if data_root is not None:
            raise UserError(f"--data {data_root}: no such dataset folder")
        return {}, 0
    index = run.dataset(root)
    return {s.path.resolve(): s for s in index.samples}, index.crop_bottom_px


def _normalisation(preprocessing: Preprocessing) -> tuple[Tensor, Tensor]:
    """The input's mean/std as (3, 1, 1) tensors, to turn an input back into the picture."""
    return (torch.tensor(preprocessing.mean).view(3, 1, 1), torch.tensor(preprocessing.std).view(3, 1, 1))


def _to_pil(x: Tensor, mean: Tensor, std: Tensor) -> Image.Image:
    """A normalised (3, H, W) input tensor back to the RGB image the model saw."""
    rgb = (x.detach().float().cpu() * std + mean).clamp(0, 1)
    return Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8), "RGB")


# -- the pictures -------------------------------------------------------------------------------

def _label(classes: ClassTable, index: int) -> str:
    cid, name = classes.id_of(index), classes.name_of(index)
    return cid if name == cid else f"{cid} {name}"


def _header(path: Path, run: Run, probs: Tensor, true_index: int | None, width: int) -> Image.Image:
    m = run.config.model
    pred = int(probs.argmax())
    line = f"{m.name}/{m.backbone}  ·  predicted {_label(run.classes, pred)} ({100 * float(probs[pred]):.1f}%)"
    if true_index is not None:
        line += f"  ·  true {_label(run.classes, true_index)}" + ("  ✓" if pred == true_index else "  ✗")
    return draw.text_block([(path.name, 17, True), (line, 14, False)], width)


def _topk(run: Run, probs: Tensor, true_index: int | None, width: int) -> tuple[Image.Image, list]:
    k = min(5, probs.numel())
    values, indices = probs.topk(k)
    rows = [(_label(run.classes, int(i)), float(v), int(i) == true_index) for v, i in zip(values, indices,
                                                                                              strict=True)]
    footer = ""
    if true_index is not None and true_index not in indices.tolist():
        rank = int((probs > probs[true_index]).sum()) + 1
        footer = f"true class ranks {rank}: {100 * float(probs[true_index]):.2f}%"
    panel = draw.topk_panel(rows, width=width, title=f"top-{k}", footer=footer)
    return panel, [(run.classes.id_of(int(i)), float(v)) for v, i in zip(values, indices, strict=True)]


def _assemble(header: Image.Image, body: Image.Image, image_offset: tuple[int, int]) -> tuple[Image.Image, tuple]:
    picture = draw.vstack([header, body], gap=GAP)
    return picture, (image_offset[0], image_offset[1] + header.height + GAP)


def _source(run: Run, original: Image.Image, x: Tensor, mean: Tensor, std: Tensor) -> Image.Image:
    """The picture that input pixels map onto by plain scaling: the original file for the
    resize-only recipes, else the (cropped) input itself."""
    return original if run.preprocessing.whole_image else _to_pil(x, mean, std)


def _windows_picture(run, path, source, x, out, b, probs, sample, true_index) -> Explanation:
    h_in, w_in = x.shape[-2:]
    display = draw.fit_image(source, DISPLAY_SIZE)
    sx, sy = display.width / w_in, display.height / h_in
    drawn: dict[str, list] = {}
    legend = [(draw.OBJECT_COLOUR, "object box")]
    notes = []
    original = source if run.preprocessing.whole_image else None
    if sample is not None and sample.box_xyxy is not None and original is not None:
        true_box = scale_box(sample.box_xyxy, display.width / original.width, display.height / original.height,
                             inclusive=False)
        draw.draw_box(display, true_box, draw.TRUE_BOX_COLOUR, width=3)
        drawn["true"] = [true_box]
        legend.append((draw.TRUE_BOX_COLOUR, "true box (dataset annotation)"))
        truth_in = true_boxes_in_input(sample.box_xyxy, (original.height, original.width), (h_in, w_in))
        iou = float(paired_iou_inclusive(out.object_boxes[b:b + 1].double().cpu(), truth_in)[0])
        notes.append(f"IoU of object box with true box: {iou:.2f}")
    picks = [int(n) for n in out.extras["window_group_sizes"].tolist()]
    windows = [scale_box(w, sx, sy) for w in out.part_boxes[b].tolist()]
    draw.draw_windows(display, windows, picks)
    drawn["windows"] = windows
    object_box = scale_box(out.object_boxes[b].tolist(), sx, sy)
    draw.draw_box(display, object_box, draw.OBJECT_COLOUR, width=4)
    drawn["object"] = [object_box]
    for g, n in enumerate(picks):
        size = "smallest" if g == 0 else "largest" if g == len(picks) - 1 else "middle"
        legend.append((draw.group_colour(g), f"part windows, scale group {g + 1} ({size}): {n} picked"))
    if "object_fallback" in out.extras and bool(out.extras["object_fallback"][b]):
        notes.append("no object found: the whole image was used")
    notes.append("window numbers: selection order")

    ox, oy = source.width / w_in, source.height / h_in

    def crop(box: Sequence[float]) -> Image.Image:
        x0, y0, x1, y1 = box
        region = (x0 * ox, y0 * oy, (x1 + 1) * ox, (y1 + 1) * oy)
        return source.resize((TILE_SIZE, TILE_SIZE), Image.Resampling.BICUBIC, box=region)

    groups = [g for g, n in enumerate(picks) for _ in range(n)]
    tiles = [(crop(out.object_boxes[b].tolist()), "object", draw.OBJECT_COLOUR)]
    tiles += [(crop(w), str(i + 1), draw.group_colour(g)) for i, (w, g) in enumerate(zip(out.part_boxes[b].tolist(),
                                                                                         groups, strict=True))]
    side_width = 420
    topk, top5 = _topk(run, probs, true_index, side_width)
    side = draw.vstack([topk, draw.legend_panel(legend + [(None, t) for t in notes], width=side_width)])
    left = draw.titled(display, "input with object box and part windows")
    top = draw.hstack([left, side], gap=2 * GAP)
    strip = draw.titled(draw.crop_strip(tiles, TILE_SIZE), "object crop and part crops (what the branches see)")
    body = draw.vstack([top, strip], gap=2 * GAP)
    header = _header(path, run, probs, true_index, body.width)
    picture, origin = _assemble(header, body, (0, left.height - display.height))
    shifted = {k: [tuple(v + origin[i % 2] for i, v in enumerate(box)) for box in boxes] for k, boxes in drawn.items()}
    return Explanation(path, picture, top5, _true_id(run, true_index), origin, display.size, shifted)


def _strips_picture(run, path, x, out, b, probs, true_index, mean, std) -> Explanation:
    view = _to_pil(x[b], mean, std).resize((STAGE_SIZE, STAGE_SIZE), Image.Resampling.BICUBIC)
    cropped = " (centre crop)" if not run.preprocessing.whole_image else ""
    strips_row = [draw.titled(view, f"model input{cropped}")]
    heat_row = []
    stages = sum(1 for key in out.extras if key.startswith("strip_importance"))
    for i in range(stages):
        fmap = out.extras[f"stage_map{i + 1}"]
        importance = out.extras[f"strip_importance{i + 1}"][b].float().cpu()
        rows = fmap.shape[-2]
        edges = [round(int(e) * STAGE_SIZE / rows) for e in out.extras[f"strip_edges{i + 1}"].tolist()]
        k = len(edges) - 1
        suppressed = torch.nonzero(importance == importance.max()).flatten().tolist()
        stride = int(out.extras[f"stage_stride{i + 1}"])
        overlay = draw.draw_strips(view, importance.tolist(), edges, suppressed)
        strips_row.append(draw.titled(overlay, f"stage {i + 1}: {k} strips, b (stride {stride})"))
        heat = fmap[b].float().mean(dim=0).cpu().numpy()
        heat_row.append(draw.titled(draw.heatmap_overlay(view, heat), f"stage {i + 1} activation "
                                    f"({heat.shape[0]}×{heat.shape[1]})"))
    topk, top5 = _topk(run, probs, true_index, STAGE_SIZE)
    legend = draw.legend_panel([(draw.BOOST_COLOUR, "strip importance b (opacity)"),
                                (draw.SUPPRESSED_COLOUR, "suppressed strip (max b)")], width=STAGE_SIZE)
    body = draw.vstack([draw.hstack(strips_row, gap=GAP),
                        draw.hstack([draw.vstack([topk, legend]), *heat_row], gap=GAP)], gap=2 * GAP)
    header = _header(path, run, probs, true_index, body.width)
    picture, origin = _assemble(header, body, (0, strips_row[0].height - STAGE_SIZE))
    return Explanation(path, picture, top5, _true_id(run, true_index), origin, view.size)


def class_activation(model: torch.nn.Module, layer: torch.nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    """Grad-CAM (Captum's LayerGradCam) of ``targets`` at ``layer``: (B, h, w) at the layer's
    resolution, ReLU'd — where the evidence for each image's class lies."""
    from captum.attr import LayerGradCam

    def logits(inputs: Tensor) -> Tensor:
        return model(inputs).logits

    with torch.enable_grad():
        cam = LayerGradCam(logits, layer).attribute(x, target=targets.tolist(), relu_attributions=True)
    return cam.detach()[:, 0]


def _plain_picture(run, path, source, probs, true_index, heat: Tensor | None = None) -> Explanation:
    display = draw.fit_image(source, DISPLAY_SIZE)
    left = draw.titled(display, "input")
    topk, top5 = _topk(run, probs, true_index, 420)
    panels = [left]
    if heat is not None:
        overlay = draw.heatmap_overlay(display, heat.float().cpu().numpy())
        panels.append(draw.titled(overlay, f"Grad-CAM of the predicted class ({heat.shape[0]}×{heat.shape[1]})"))
    body = draw.hstack([*panels, topk], gap=2 * GAP)
    header = _header(path, run, probs, true_index, body.width)
    picture, origin = _assemble(header, body, (0, left.height - display.height))
    return Explanation(path, picture, top5, _true_id(run, true_index), origin, display.size)


def _heatmaps_picture(run, path, x, out, b, probs, true_index, mean, std) -> Explanation:
    """The model input and, beside it, each of the model's named maps (``heatmapN``) over it."""
    view = _to_pil(x[b], mean, std).resize((STAGE_SIZE, STAGE_SIZE), Image.Resampling.BICUBIC)
    cropped = " (centre crop)" if not run.preprocessing.whole_image else ""
    panels = [draw.titled(view, f"model input{cropped}")]
    for i, title in enumerate(run.spec.heatmap_titles):
        if f"heatmap{i + 1}" not in out.extras:  # fewer maps on this backbone (PIM taps 3 CNN stages, 4 Swin stages)
            continue
        heat = out.extras[f"heatmap{i + 1}"][b].float().cpu()
        panels.append(draw.titled(draw.heatmap_overlay(view, heat.numpy()),
                                  f"{title} ({heat.shape[0]}×{heat.shape[1]})"))
    topk, top5 = _topk(run, probs, true_index, STAGE_SIZE)
    body = draw.vstack([draw.hstack(panels, gap=GAP), topk], gap=2 * GAP)
    header = _header(path, run, probs, true_index, body.width)
    picture, origin = _assemble(header, body, (0, panels[0].height - STAGE_SIZE))
    return Explanation(path, picture, top5, _true_id(run, true_index), origin, view.size)


def _true_id(run: Run, true_index: int | None) -> str | None:
    return None if true_index is None else run.classes.id_of(true_index)


# -- running ------------------------------------------------------------------------------------

def describe(pictures: Sequence[Picture]) -> str:
    """One sentence for a reader of what a model's pictures (its spec's ``pictures``) show."""
    if Picture.WINDOWS in pictures:
        return ("The object box (magenta) and the part windows, numbered in selection order and coloured by "
                "scale group, on the image (the annotated box in green where the data has one); below, the "
                "crops the object and part branches classified.")
    if Picture.HEATMAPS in pictures:
        return ("The model's input and, beside it, the model's own maps over it (what each head or attention "
                "map looks at; each panel's title says which).")
    if Picture.STRIPS in pictures:
        return ("Per stage, the strip importances over the input (the suppressed strip outlined in red) and, "
                "below, the stage's activation (channel mean of its feature map) as a heatmap.")
    return ("The input and the Grad-CAM heatmap of the predicted class at the backbone's last feature map "
            "(Captum's LayerGradCam): where the evidence for that class lies.")


@torch.no_grad()
def explain_images(run: Run, paths: Sequence[Path], data_root: str | Path | None = None, batch_size: int = 8,
                   skip_unreadable: Sequence[bool] | None = None,
                   model: torch.nn.Module | None = None) -> Iterator[Explanation]:
    """Explanations of ``paths`` in order; images are run through the model ``batch_size`` at a
    time on the run's device. An unreadable file raises, unless its ``skip_unreadable`` entry is
    True (then it is skipped with a warning)."""
    model = model if model is not None else run.trained_model(for_inference=False)
    spec = run.spec
    forward = spec.explain_forward or (lambda m, x: m(x))
    transform = run.eval_transform()
    mean, std = _normalisation(run.preprocessing)
    samples, crop_bottom = _dataset_lookup(run, data_root, paths)
    skip = list(skip_unreadable) if skip_unreadable is not None else [False] * len(paths)
    for start in range(0, len(paths), batch_size):
        batch = []
        for path, may_skip in zip(paths[start:start + batch_size], skip[start:start + batch_size], strict=True):
            sample = samples.get(path.resolve())
            try:
                original = load_rgb(path, crop_bottom if sample is not None else 0)
            except ImageDecodeError as e:
                if not may_skip:
                    raise
                warnings.warn(f"skipped {e}", stacklevel=2)
                continue
            batch.append((path, original, sample))
        if not batch:
            continue
        x = torch.stack([transform(original) for _, original, _ in batch]).to(run.device)
        out: ModelOutput = forward(model, x)
        probs = scaled_probabilities(out.logits, run.temperature).cpu()  # the run's calibrated probabilities
        layer = spec.cam_layer(model) if not spec.pictures else None
        heat = class_activation(model, layer, x, probs.argmax(dim=1)).cpu() if layer is not None else None
        x_cpu = x.cpu()
        for b, (path, original, sample) in enumerate(batch):
            true_index = sample.label if sample is not None else None
            if Picture.STRIPS in spec.pictures:
                yield _strips_picture(run, path, x_cpu, out, b, probs[b], true_index, mean, std)
                continue
            if Picture.HEATMAPS in spec.pictures:
                yield _heatmaps_picture(run, path, x_cpu, out, b, probs[b], true_index, mean, std)
                continue
            source = _source(run, original, x_cpu[b], mean, std)
            if Picture.WINDOWS in spec.pictures:
                yield _windows_picture(run, path, source, x_cpu, out, b, probs[b], sample, true_index)
            else:
                yield _plain_picture(run, path, source, probs[b], true_index, None if heat is None else heat[b])


def explain(checkpoint: str | Path, images: Sequence[str | Path] | str | Path, out_dir: str | Path,
            device: str = "cpu", data_root: str | Path | None = None, batch_size: int = 8,
            calibrate: bool = True) -> list[Path]:
    """Write one PNG per input image (files, or folders searched recursively) into ``out_dir``
    and return their paths in input order. ``checkpoint`` is a checkpoint file or a run folder;
    ``data_root`` is the dataset the images come from, for their true class and box (default:
    the run's dataset when the images lie inside it)."""
    found = collect_images(images)
    run = Run.open(checkpoint, device=device, calibrate=calibrate)
    out_dir = Path(out_dir)
    names = {path: name for path, name, _ in found}
    written = []
    explanations = explain_images(run, [p for p, _, _ in found], data_root, batch_size,
                                  skip_unreadable=[not explicit for _, _, explicit in found])
    try:
        for e in explanations:
            target = out_dir / names[e.path]
            with atomic_open(target, "wb") as f:  # a kill leaves no half picture; unwritable --out is one line
                e.picture.save(f, format="PNG", optimize=True)
            written.append(target)
    except ImageDecodeError as e:  # a file named on the command line (those found in folders are skipped)
        raise UserError(f"{e.path}: {e.reason}; fgvc explain takes image files (.jpg, .png and the other usual "
                        "formats) or folders of them") from None
    return written
