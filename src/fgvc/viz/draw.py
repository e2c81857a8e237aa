"""Pictures drawn on images with PIL, for ``fgvc explain`` and the report's example images.

Boxes, numbered windows, strip-importance overlays, heatmaps, crop strips, top-k panels,
legends, captioned grids, and panels stacked into one picture. No model code and no plots
(those are in :mod:`fgvc.viz.plots`); box arithmetic is in :mod:`fgvc.ops.boxes`.

Boxes are ``(x0, y0, x1, y1)``, x = column, **inclusive** pixel indices (ModelOutput's
convention). A box is drawn *inside* its coordinates: its outermost coloured pixels are exactly
columns x0 and x1 and rows y0 and y1, so a test can read the box back from the picture. Map a
box onto an enlarged picture with :func:`fgvc.ops.boxes.scale_box` first.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "RGB",
    "OBJECT_COLOUR",
    "TRUE_BOX_COLOUR",
    "GROUP_COLOURS",
    "SUPPRESSED_COLOUR",
    "BOOST_COLOUR",
    "group_colour",
    "font",
    "draw_box",
    "draw_windows",
    "draw_strips",
    "heatmap_overlay",
    "fit_image",
    "framed_tile",
    "crop_strip",
    "topk_panel",
    "legend_panel",
    "text_block",
    "titled",
    "hstack",
    "vstack",
    "image_grid",
]

RGB = tuple[int, int, int]
Box = Sequence[float]

OBJECT_COLOUR: RGB = (255, 0, 255)  # AOLM object box: magenta, rare in photographs
TRUE_BOX_COLOUR: RGB = (0, 230, 0)  # annotated box
GROUP_COLOURS: tuple[RGB, ...] = ((255, 150, 0), (0, 190, 255), (255, 240, 0), (255, 70, 70), (170, 130, 255))
SUPPRESSED_COLOUR: RGB = (255, 30, 30)
BOOST_COLOUR: RGB = (255, 170, 0)
BACKGROUND: RGB = (255, 255, 255)
INK: RGB = (20, 20, 20)
MUTED: RGB = (110, 110, 110)


def group_colour(group: int) -> RGB:
    """Colour of APPM scale group ``group`` (0-based)."""
    return GROUP_COLOURS[group % len(GROUP_COLOURS)]


# -- text ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (shipped with matplotlib) at ``size`` px; Pillow's own font if it is missing."""
    try:
        import matplotlib

        name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size)


def _text_size(text: str, face) -> tuple[int, int]:
    left, top, right, bottom = face.getbbox(text)
    return right - left, bottom - top


def _fit_text(text: str, face, width: int) -> str:
    """``text`` shortened with an ellipsis so that it fits ``width`` px."""
    if _text_size(text, face)[0] <= width:
        return text
    while text and _text_size(text + "…", face)[0] > width:
        text = text[:-1]
    return text + "…"


def _contrast_ink(colour: RGB) -> RGB:
    r, g, b = colour
    return INK if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _tag(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, colour: RGB, size: int = 13) -> tuple[int, ...]:
    """A filled label with its top-left corner at ``xy``; returns its inclusive rectangle."""
    face = font(size, bold=True)
    w, h = _text_size(text, face)
    x, y = xy
    rect = (x, y, x + w + 5, y + h + 5)
    draw.rectangle(rect, fill=colour)
    left, top, _, _ = face.getbbox(text)
    draw.text((x + 3 - left, y + 3 - top), text, fill=_contrast_ink(colour), font=face)
    return rect


# -- boxes --------------------------------------------------------------------------------------

def _clip(box: Box, width: int, height: int) -> tuple[int, int, int, int] | None:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width - 1), min(y1, height - 1)
    return (x0, y0, x1, y1) if x0 <= x1 and y0 <= y1 else None


def draw_box(image: Image.Image, box: Box, colour: RGB, width: int = 3, halo: bool = True) -> None:
    """Outline the inclusive ``box`` in place, ``width`` px thick inside it; ``halo`` adds a 1 px
    dark line just inside the outline so that it reads on light and dark backgrounds alike."""
    clipped = _clip(box, *image.size)
    if clipped is None:
        return
    draw = ImageDraw.Draw(image)
    draw.rectangle(clipped, outline=colour, width=width)
    x0, y0, x1, y1 = clipped
    if halo and x1 - x0 > 2 * width + 1 and y1 - y0 > 2 * width + 1:
        draw.rectangle((x0 + width, y0 + width, x1 - width, y1 - width), outline=(0, 0, 0), width=1)


def _overlaps(a: Sequence[int], b: Sequence[int]) -> bool:
    return not (a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1])


def draw_windows(image: Image.Image, boxes: Sequence[Box], group_sizes: Sequence[int], width: int = 2) -> None:
    """Draw windows (inclusive boxes, in selection order) in place, coloured by scale group and
    numbered 1..N. Numbers sit inside their window's corners and avoid each other's tags."""
    if sum(group_sizes) != len(boxes):
        raise ValueError(f"{len(boxes)} windows but the groups hold {sum(group_sizes)} ({list(group_sizes)})")
    groups = [g for g, size in enumerate(group_sizes) for _ in range(size)]
    clipped = [_clip(b, *image.size) for b in boxes]
    for box, g in reversed(list(zip(clipped, groups, strict=True))):  # the first picks end up on top
        if box is not None:
            draw_box(image, box, group_colour(g), width=width, halo=False)
    placed: list[tuple[int, ...]] = []
    for number, (box, g) in enumerate(zip(clipped, groups, strict=True), start=1):
        if box is None:
            continue
        tag = Image.new("RGB", (60, 30), group_colour(g))
        w, h = (v + 1 for v in _tag(ImageDraw.Draw(tag), (0, 0), str(number), group_colour(g))[2:])
        x0, y0, x1, y1 = box
        candidates = [(x0 + width + dx, y0 + width) for dx in range(0, max(x1 - x0 - w, 1), w + 2)]
        candidates += [(x0 + width, y1 - width - h + 1), (x1 - width - w + 1, y1 - width - h + 1)]
        x, y = next((c for c in candidates if not any(_overlaps((*c, c[0] + w - 1, c[1] + h - 1), p) for p in placed)),
                    candidates[0])
        # the tag stays inside its window, so a window's colour never leaves the window
        left, top = max(x, x0), max(y, y0)
        right, bottom = min(x + w - 1, x1), min(y + h - 1, y1)
        if left <= right and top <= bottom:
            image.paste(tag.crop((left - x, top - y, right - x + 1, bottom - y + 1)), (left, top))
            placed.append((x, y, x + w - 1, y + h - 1))


# -- overlays -----------------------------------------------------------------------------------

def draw_strips(image: Image.Image, importance: Sequence[float], row_edges: Sequence[int],
                suppressed: Sequence[int] = ()) -> Image.Image:
    """FBSM strips as a translucent overlay: strip j spans picture rows ``row_edges[j]`` to
    ``row_edges[j + 1] - 1``, its opacity grows with its importance (softmax b: a uniform strip
    is faint, one holding three times its share or more is strong), its value is printed at the
    right; suppressed strips get a red outline and a "suppressed" tag."""
    k = len(importance)
    if len(row_edges) != k + 1:
        raise ValueError(f"{k} strips need {k + 1} row edges, got {len(row_edges)}")
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for j, b in enumerate(importance):
        alpha = int(10 + 180 * min(1.0, b * k / 3))
        draw.rectangle((0, row_edges[j], image.width - 1, row_edges[j + 1] - 1), fill=(*BOOST_COLOUR, alpha))
        if j:
            draw.line((0, row_edges[j], image.width - 1, row_edges[j]), fill=(255, 255, 255, 200), width=1)
    out = Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
    draw = ImageDraw.Draw(out)
    face = font(12, bold=True)
    for j, b in enumerate(importance):
        y0, y1 = row_edges[j], row_edges[j + 1] - 1
        if j in suppressed:
            draw.rectangle((0, y0, out.width - 1, y1), outline=SUPPRESSED_COLOUR, width=3)
        text = f"{b:.3f}" + ("  suppressed" if j in suppressed else "")
        w, h = _text_size(text, face)
        if y1 - y0 + 1 >= h + 4:
            colour = SUPPRESSED_COLOUR if j in suppressed else (255, 255, 255)
            _tag(draw, (out.width - w - 11, (y0 + y1 - h - 5) // 2), text, colour, size=12)
    return out


def heatmap_overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> Image.Image:
    """``heat`` (h, w), any range, min-max scaled, upsampled bilinearly to the image and blended."""
    from matplotlib import colormaps

    heat = np.asarray(heat, dtype=np.float32)
    span = float(heat.max() - heat.min())
    scaled = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    up = np.asarray(Image.fromarray(scaled, mode="F").resize(image.size, Image.Resampling.BILINEAR))
    colours = (colormaps[cmap](np.clip(up, 0, 1))[..., :3] * 255).astype(np.uint8)
    return Image.blend(image.convert("RGB"), Image.fromarray(colours, "RGB"), alpha)


# -- panels -------------------------------------------------------------------------------------

def fit_image(image: Image.Image, long_side: int) -> Image.Image:
    """``image`` resized (up or down) so that its longer side is ``long_side`` px, aspect kept."""
    scale = long_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(size, Image.Resampling.BICUBIC)


def framed_tile(image: Image.Image, size: int, colour: RGB, caption: str = "", border: int = 4) -> Image.Image:
    """``image`` squeezed to a ``size`` square inside a coloured frame, with a caption tag."""
    tile = Image.new("RGB", (size, size), colour)
    inner = size - 2 * border
    tile.paste(image.convert("RGB").resize((inner, inner), Image.Resampling.BICUBIC), (border, border))
    if caption:
        _tag(ImageDraw.Draw(tile), (border, border), caption, colour)
    return tile


def crop_strip(tiles: Sequence[tuple[Image.Image, str, RGB]], size: int = 120, gap: int = 6) -> Image.Image:
    """Crops side by side, each ``(image, caption, frame colour)``."""
    return hstack([framed_tile(img, size, colour, caption) for img, caption, colour in tiles], gap=gap)


def topk_panel(rows: Sequence[tuple[str, float, bool]], width: int = 420, title: str = "top-5",
               footer: str = "") -> Image.Image:
    """Classes with probability bars, best first; ``rows`` = (label, probability, is the true class).
    The true class is drawn in green; ``footer`` adds a line (e.g. where the true class ranks)."""
    face, bold = font(14), font(15, bold=True)
    line = 26
    height = 34 + line * 2 * len(rows) + (line if footer else 0) + 6
    panel = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    draw.text((8, 6), title, fill=INK, font=bold)
    y = 34
    bar_width = width - 90
    for rank, (label, p, is_true) in enumerate(rows, start=1):
        colour = (0, 150, 0) if is_true else INK
        text = _fit_text(f"{rank}. {label}" + ("  (true)" if is_true else ""), face, width - 16)
        draw.text((8, y), text, fill=colour, font=face)
        y += line - 6
        draw.rectangle((8, y, 8 + bar_width, y + 14), fill=(235, 235, 235))
        if p > 0:
            draw.rectangle((8, y, 8 + max(1, round(bar_width * p)), y + 14),
                           fill=(60, 170, 60) if is_true else (70, 110, 200))
        draw.text((16 + bar_width, y - 1), f"{100 * p:5.1f}%", fill=INK, font=face)
        y += line + 6
    if footer:
        draw.text((8, y), _fit_text(footer, face, width - 16), fill=MUTED, font=face)
    return panel


def legend_panel(entries: Sequence[tuple[RGB | None, str]], width: int = 420) -> Image.Image:
    """Colour swatches with their meaning, one per line; an entry without colour is a note."""
    face = font(13)
    panel = Image.new("RGB", (width, 10 + 22 * len(entries)), BACKGROUND)
    draw = ImageDraw.Draw(panel)
    for i, (colour, text) in enumerate(entries):
        y = 6 + 22 * i
        if colour is not None:
            draw.rectangle((8, y + 2, 26, y + 16), fill=colour, outline=INK)
        draw.text((34 if colour is not None else 8, y), _fit_text(text, face, width - 40),
                  fill=INK if colour is not None else MUTED, font=face)
    return panel


def text_block(lines: Sequence[tuple[str, int, bool]], width: int) -> Image.Image:
    """Lines of text ``(text, size px, bold)`` on a white ``width`` px band, shortened to fit."""
    faces = [font(size, bold) for _, size, bold in lines]
    heights = [_text_size("Ag", face)[1] + 10 for face in faces]
    out = Image.new("RGB", (width, sum(heights) + 4), BACKGROUND)
    draw = ImageDraw.Draw(out)
    y = 4
    for (text, _, _), face, height in zip(lines, faces, heights, strict=True):
        draw.text((2, y), _fit_text(text, face, width - 4), fill=INK, font=face)
        y += height
    return out


def titled(image: Image.Image, title: str, size: int = 15, bold: bool = True) -> Image.Image:
    """``image`` with a caption line above it."""
    face = font(size, bold=bold)
    height = _text_size("Ag", face)[1] + 10
    out = Image.new("RGB", (image.width, image.height + height), BACKGROUND)
    ImageDraw.Draw(out).text((2, 4), _fit_text(title, face, image.width - 4), fill=INK, font=face)
    out.paste(image, (0, height))
    return out


def hstack(images: Sequence[Image.Image], gap: int = 8, background: RGB = BACKGROUND) -> Image.Image:
    """Side by side, top-aligned."""
    width = sum(i.width for i in images) + gap * max(len(images) - 1, 0)
    out = Image.new("RGB", (max(width, 1), max((i.height for i in images), default=1)), background)
    x = 0
    for img in images:
        out.paste(img.convert("RGB"), (x, 0))
        x += img.width + gap
    return out


def vstack(images: Sequence[Image.Image], gap: int = 8, background: RGB = BACKGROUND) -> Image.Image:
    """One above the other, left-aligned."""
    height = sum(i.height for i in images) + gap * max(len(images) - 1, 0)
    out = Image.new("RGB", (max((i.width for i in images), default=1), max(height, 1)), background)
    y = 0
    for img in images:
        out.paste(img.convert("RGB"), (0, y))
        y += img.height + gap
    return out


def image_grid(items: Sequence[tuple[Image.Image, str]], columns: int = 6, tile: int = 160,
               gap: int = 8) -> Image.Image:
    """Images (fitted into ``tile`` squares, centred) in rows of ``columns``, each captioned below;
    a caption may hold several lines."""
    face = font(12)
    lines = max((caption.count("\n") + 1 for _, caption in items), default=1)
    cell_h = tile + 4 + 16 * lines
    rows = math.ceil(len(items) / columns) if items else 1
    out = Image.new("RGB", (columns * tile + (columns - 1) * gap, rows * cell_h + (rows - 1) * gap), BACKGROUND)
    draw = ImageDraw.Draw(out)
    for i, (img, caption) in enumerate(items):
        x, y = (i % columns) * (tile + gap), (i // columns) * (cell_h + gap)
        fitted = fit_image(img, tile)
        out.paste(fitted, (x + (tile - fitted.width) // 2, y + (tile - fitted.height) // 2))
        for j, text in enumerate(caption.split("\n")):
            draw.text((x, y + tile + 4 + 16 * j), _fit_text(text, face, tile), fill=INK, font=face)
    return out
