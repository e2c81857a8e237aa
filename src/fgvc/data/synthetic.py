"""Synthetic fine-grained "birds": a dataset the demo and the tests can learn from without a download.

Every class shares the same global shape and colour statistics; classes differ only in small part
details, so a model has to find the bird and look at its parts (the fine-grained setting):

  * crown marking colour (red / yellow / blue / green), saturated;
  * crown marking shape (cap on top of the head / stripe through the eye / throat patch);
  * number of pale wing bars (1 / 2 / 3);
  * tail pattern (plain / dark stripes / pale spots);
  * beak colour (orange / black / pink).

That is 4 * 3 * 3 * 3 * 3 = 324 distinct classes (``MAX_CLASSES``). A class is one combination; the
combinations are picked from a seeded shuffle in twins that differ in exactly one part, so every class
has a look-alike (see :func:`choose_class_attributes`). Body colour, proportions, pose (flip,
rotation within +-25 degrees), position, scale (bird length 35-70 % of the image side), background
clutter, lighting and sensor noise are drawn per image, independently of the class.

Each image carries its true object box, measured on the drawn bird's mask after rotation, in CUB's
convention: ``x, y, width, height`` in pixels, ``x`` = column, 0-based, exclusive extent.

Layouts written by :func:`generate_dataset` (image numbers run 1..per_class within a class; the
last ones of each class form the test split)::

    competition
    OUT/
      train/04615_Sooty_Albatross/04615_0001.jpg   <classID>_<Name>/<classID>_<nnnn>.jpg; IDs 5 digits, gaps
      test/0742e155-1759-4f20-8d18-36f87d36a194.jpg flat, unlabelled, seeded UUID4 names
      test_labels.csv                              file,class_id   (file name in test/, ID as spelled)
      bounding_boxes.csv                           file,x,y,width,height   (file relative to OUT)

    cub
    OUT/CUB_200_2011/
      images/001.Sooty_Albatross/Sooty_Albatross_0001.jpg
      images.txt               "<image_id> <path under images/>", image IDs 1-based
      image_class_labels.txt   "<image_id> <class 1..N>"
      train_test_split.txt     "<image_id> <1 train | 0 test>"
      classes.txt              "<k> <NNN.Name>"
      bounding_boxes.txt       "<image_id> <x> <y> <w> <h>", floats with one decimal ("12.0")

    imagefolder
    OUT/
      train/Sooty_Albatross/Sooty_Albatross_0001.jpg
      test/Sooty_Albatross/Sooty_Albatross_0033.jpg
      bounding_boxes.csv       file,x,y,width,height   (file relative to OUT)

Everything is a function of the arguments: the same call writes byte-identical files. Each image's
random stream is derived from ``(seed, class, image index)``, so generation order does not matter.
"""

from __future__ import annotations

import colorsys
import csv
import itertools
import math
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ConfigError, FgvcError

__all__ = [
    "ATTRIBUTE_LEVELS",
    "LAYOUTS",
    "MAX_CLASSES",
    "BirdAttributes",
    "SynthSummary",
    "choose_class_attributes",
    "generate_dataset",
    "render_bird",
]

# ----------------------------------------------------------------------------------------------
# Arguments and output files

LAYOUTS: tuple[str, ...] = ("competition", "cub", "imagefolder")
MIN_CLASSES = 2
MIN_PER_CLASS = 2
MIN_SIZE = 32
JPEG_QUALITY = 90
FIRST_CLASS_ID = 4615
CLASS_ID_GAP = (1, 4)  # inclusive: competition IDs have gaps, like real competition data
CLASS_ID_DIGITS = 5
CUB_FOLDER = "CUB_200_2011"
IMAGE_NUMBER_DIGITS = 4

# Independent random streams derived from the seed: (seed, stream, class, image).
_IMAGE_STREAM = 1
_UUID_STREAM = 2

# ----------------------------------------------------------------------------------------------
# Part attributes: the only things that separate classes. Colours are saturated on purpose: they
# must survive JPEG and a small CNN trained from scratch; the body palette stays muted.

CROWN_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 25, 30),
    "yellow": (250, 215, 0),
    "blue": (25, 80, 235),
    "green": (20, 185, 60),
}
CROWN_SHAPES: tuple[str, ...] = ("cap", "eye_stripe", "throat")
WING_BAR_COUNTS: tuple[int, ...] = (1, 2, 3)
TAIL_PATTERNS: tuple[str, ...] = ("plain", "striped", "spotted")
BEAK_COLOURS: dict[str, tuple[int, int, int]] = {
    "orange": (245, 125, 15),
    "black": (22, 22, 22),
    "pink": (245, 140, 175),
}
ATTRIBUTE_LEVELS: dict[str, tuple] = {
    "crown_colour": tuple(CROWN_COLOURS),
    "crown_shape": CROWN_SHAPES,
    "wing_bars": WING_BAR_COUNTS,
    "tail": TAIL_PATTERNS,
    "beak": tuple(BEAK_COLOURS),
}
MAX_CLASSES = math.prod(len(levels) for levels in ATTRIBUTE_LEVELS.values())

_NAME_ADJECTIVES = (
    "Sooty", "Dusky", "Rufous", "Crested", "Speckled", "Tufted", "Ashy", "Olive", "Cinnamon", "Slaty",
    "Buff", "Pale", "Lesser", "Greater", "Northern", "Southern", "Western", "Eastern", "Mountain",
    "Marsh", "Forest", "Desert", "Island", "River", "Hooded", "Masked", "Collared", "Streaked",
    "Barred", "Scaly", "Bronzed", "Chestnut", "Ochre", "Smoky", "Tawny", "Golden", "Silver",
    "Mottled", "Painted", "Plain",
)  # fmt: skip
_NAME_NOUNS = (
    "Albatross", "Warbler", "Finch", "Sparrow", "Tanager", "Flycatcher", "Vireo", "Wren", "Thrush",
    "Bunting", "Grosbeak", "Oriole", "Kingfisher", "Swallow", "Towhee", "Junco", "Shrike", "Pipit",
    "Nuthatch", "Grebe", "Tern", "Gull", "Cuckoo", "Jay", "Kingbird", "Phoebe", "Pewee",
    "Woodpecker", "Cormorant", "Blackbird",
)  # fmt: skip

# ----------------------------------------------------------------------------------------------
# The canonical bird, in "bird units": 100 units = bird length (tail tip to beak tip), u to the
# right (the beak side), v downwards. Proportions are jittered per image by up to PROPORTION_JITTER.

BIRD_LENGTH = 100.0
FRAME = (0.0, 4.0, 106.0, 68.0)  # (u0, v0, u1, v1): holds every part at any jitter; used for placement
PROPORTION_JITTER = 0.08
BODY_CENTRE = (50.0, 40.0)
BODY_AXES = (26.0, 16.0)
LEG_HIPS_FEET = (((-5.0, 0.8), (-8.0, 1.5)), ((5.0, 0.8), (7.0, 1.5)))  # (du, dv in body half-heights)
LEG_HALF_WIDTH = 1.1
WING_OFFSET = (-3.0, -2.0)  # from the body centre
WING_AXES = (0.75, 0.62)  # of the body's semi-axes
WING_TILT_DEG = 8.0
WING_BAR_SPACING = 9.0
WING_BAR_HALF_WIDTH = 3.0
WING_BAR_SLANT = 0.35  # bars lean with the feathers instead of standing upright
TAIL_TIP_U = 2.0
TAIL_ROOT = 0.55  # the tail starts this far behind the body centre, in body half-lengths
TAIL_TIP_SPREAD = (-14.0, 8.0)  # v offsets of the tail tip's corners from the body centre
TAIL_ROOT_SPREAD = (-7.0, 3.0)
TAIL_STRIPE_OFFSETS = (4.0, 11.5, 19.0)  # u from the tail tip
TAIL_STRIPE_HALF_WIDTH = 2.6
TAIL_SPOT_OFFSETS = ((5.0, -8.0), (5.0, 1.0), (12.0, -5.0), (12.0, 3.0), (19.0, -2.0))  # (u from tip, v)
TAIL_SPOT_RADIUS = 3.2
HEAD_CENTRE = (75.0, 23.0)
HEAD_RADIUS = 16.0
# Head features, in head radii from the head centre.
EYE_OFFSET = (0.3, -0.2)
EYE_RADIUS = 2.4  # bird units
CAP_LOWER_EDGE = -0.05  # the cap covers the head above this line: a little over half of it
EYE_STRIPE_HALF_HEIGHT = 0.3
EYE_STRIPE_BACK = -0.6  # the stripe runs from here to the front of the head
THROAT_CENTRE = (0.2, 0.6)
THROAT_AXES = (0.7, 0.48)
BEAK_BASE = (0.72, -0.38, 0.32)  # u, top v, bottom v
BEAK_TIP_V = -0.02
BEAK_LENGTH = 12.0  # bird units beyond the head

OBJECT_SCALE = (0.35, 0.70)  # bird length / image side
MAX_ROTATION_DEG = 25.0

# Per-image look (ranges of uniform draws). The body palette stays muted so the saturated part
# markings stand out; shades are multipliers of the body colour.
BODY_SATURATION = (0.08, 0.35)
BODY_VALUE = (0.40, 0.72)
WING_SHADE = (0.62, 0.85)
TAIL_SHADE = (0.80, 0.95)
HEAD_SHADE = (0.90, 1.08)
BELLY_BLEND = (0.2, 0.7)  # how far the lower body blends towards BELLY_COLOUR
MARKING_GAIN = (0.88, 1.0)  # brightness of the class colours (crown, beak)

# Colours of the parts shared by every class (RGB, 0-255).
BAR_AND_SPOT_COLOUR = (240, 232, 205)
TAIL_STRIPE_COLOUR = (30, 26, 24)
EYE_COLOUR = (12, 12, 14)
LEG_COLOUR = (80, 66, 55)
BELLY_COLOUR = (236, 226, 205)
PLAIN_BACKGROUND = (255, 255, 255)  # render_bird(background=False); no bird pixel is pure white

# ----------------------------------------------------------------------------------------------
# Scene: clutter, texture, lighting.

CLUTTER_SHAPES = (6, 16)  # inclusive count range
CLUTTER_MAX_SATURATION = 0.3  # clutter may be colourful, but not as saturated as the part markings
CLUTTER_VALUE = (0.2, 0.95)
CLUTTER_SIZE = (0.05, 0.4)  # of the image side
CLUTTER_LINE_WIDTH = (0.005, 0.03)  # of the image side: twigs at the scale of bird parts
CLUTTER_POLYGON_VERTICES = (3, 6)  # inclusive
CLUTTER_SPILL = 0.1  # shapes may start this far (image sides) outside the image
BACKGROUND_GRID = 4  # the smooth base colour field is a GRID x GRID colour grid, upsampled
BACKGROUND_VARIATION = 20.0  # grey-level spread of that grid around the scene's base colour
TEXTURE_SIGMA = (3.0, 12.0)  # fine noise texture, grey levels
COARSE_TEXTURE_SIGMA = (4.0, 16.0)
COARSE_TEXTURE_CELL = 8  # pixels per cell of the coarse texture
BRIGHTNESS = (0.75, 1.2)
LIGHT_GRADIENT = (0.0, 0.45)  # gain change across the image side, from a random direction
COLOUR_CAST = 0.08  # per-channel gain in 1 +- COLOUR_CAST
SENSOR_NOISE_SIGMA = (1.5, 5.0)


# ----------------------------------------------------------------------------------------------
# Attributes and classes


@dataclass(frozen=True)
class BirdAttributes:
    """The part details that make a class; everything else about a bird is drawn per image."""

    crown_colour: str
    crown_shape: str
    wing_bars: int
    tail: str
    beak: str

    def __post_init__(self) -> None:
        for f in fields(self):
            value, allowed = getattr(self, f.name), ATTRIBUTE_LEVELS[f.name]
            if value not in allowed:
                raise ValueError(f"BirdAttributes.{f.name} must be one of {allowed}, got {value!r}")

    def as_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self))

    def describe(self) -> str:
        """Readable summary, e.g. for a class listing: 'red cap, 2 wing bars, striped tail, black beak'."""
        crown = f"{self.crown_colour} {self.crown_shape.replace('_', ' ')}"
        bars = f"{self.wing_bars} wing bar{'s' if self.wing_bars > 1 else ''}"
        return f"{crown}, {bars}, {self.tail} tail, {self.beak} beak"


def _neighbours(combo: tuple) -> list[tuple]:
    """Combinations that differ from ``combo`` in exactly one attribute."""
    out = []
    for i, levels in enumerate(ATTRIBUTE_LEVELS.values()):
        out.extend(combo[:i] + (level,) + combo[i + 1 :] for level in levels if level != combo[i])
    return out


def choose_class_attributes(rng: np.random.Generator, num_classes: int) -> tuple[BirdAttributes, ...]:
    """``num_classes`` distinct combinations, in twins: class 2k+1 differs from class 2k in one part only.

    Each even class is the next unused combination of a seeded shuffle of the attribute product; its
    twin is its first unused one-part neighbour in that order. Every class so has a look-alike (the
    fine-grained case), while unrelated classes differ in several parts. That keeps the demo learnable
    from scratch: a chain of one-part steps (every class one part from an earlier one) made 10
    classes so alike that a ResNet-18 trained from scratch on 32 images per class stayed near chance.
    The choice is prefix-stable: asking for more classes never changes the first ones.
    """
    if not MIN_CLASSES <= num_classes <= MAX_CLASSES:
        raise ConfigError(f"num_classes must be between {MIN_CLASSES} and {MAX_CLASSES}, got {num_classes}")
    combos = list(itertools.product(*ATTRIBUTE_LEVELS.values()))
    shuffled = [combos[i] for i in rng.permutation(len(combos))]
    rank = {combo: i for i, combo in enumerate(shuffled)}
    chosen: list[tuple] = []
    taken: set[tuple] = set()
    while len(chosen) < num_classes:
        if len(chosen) % 2 == 0:
            combo = next(c for c in shuffled if c not in taken)
        else:
            twins = [c for c in _neighbours(chosen[-1]) if c not in taken]
            if not twins:
                # Only near MAX_CLASSES. One-part steps connect the whole product, so some unused
                # combination is still one part away from some chosen class.
                twins = [c for c in set().union(*map(_neighbours, chosen)) if c not in taken]
            combo = min(twins, key=rank.__getitem__)
        chosen.append(combo)
        taken.add(combo)
    return tuple(BirdAttributes(*combo) for combo in chosen)


def _class_names(rng: np.random.Generator, num_classes: int) -> tuple[str, ...]:
    """Unique bird-like names ("Sooty_Albatross"), underscores for spaces as in CUB's folder names."""
    picks = rng.choice(len(_NAME_ADJECTIVES) * len(_NAME_NOUNS), size=num_classes, replace=False)
    return tuple(
        f"{_NAME_ADJECTIVES[p // len(_NAME_NOUNS)]}_{_NAME_NOUNS[p % len(_NAME_NOUNS)]}" for p in picks
    )


def _class_ids(rng: np.random.Generator, num_classes: int) -> tuple[str, ...]:
    """Zero-padded IDs with seeded gaps ("04615", "04617", ...): readers must keep them as spelled."""
    gaps = rng.integers(CLASS_ID_GAP[0], CLASS_ID_GAP[1] + 1, size=num_classes - 1)
    numbers = FIRST_CLASS_ID + np.concatenate([[0], np.cumsum(gaps)])
    return tuple(f"{int(n):0{CLASS_ID_DIGITS}d}" for n in numbers)


# ----------------------------------------------------------------------------------------------
# Drawing one bird


@dataclass(frozen=True)
class _Look:
    """Per-image appearance that is independent of the class."""

    body_scale: tuple[float, float]  # multiplies BODY_AXES
    head_scale: float
    tail_scale: float  # multiplies the tail's length and spread
    body: np.ndarray  # RGB float
    wing_shade: float  # wing colour = body * shade
    tail_shade: float
    head_shade: float
    belly: float  # how far the belly blends towards BELLY_COLOUR
    marking_gain: float  # brightness of the class-specific colours


@dataclass(frozen=True)
class _Pose:
    length_frac: float  # bird length / image side
    angle_deg: float
    flipped: bool
    centre_frac: tuple[float, float]  # where in the allowed range the frame centre goes


def _rgb(colour: Sequence[float]) -> np.ndarray:
    return np.asarray(colour, dtype=np.float32)


def _hsv_rgb(h: float, s: float, v: float) -> np.ndarray:
    return _rgb([255.0 * c for c in colorsys.hsv_to_rgb(h, s, v)])


def _draw_pose(rng: np.random.Generator) -> _Pose:
    return _Pose(
        length_frac=float(rng.uniform(*OBJECT_SCALE)),
        angle_deg=float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)),
        flipped=bool(rng.integers(2)),
        centre_frac=(float(rng.random()), float(rng.random())),
    )


def _draw_look(rng: np.random.Generator) -> _Look:
    def jitter() -> float:
        return float(rng.uniform(1 - PROPORTION_JITTER, 1 + PROPORTION_JITTER))

    return _Look(
        body_scale=(jitter(), jitter()),
        head_scale=jitter(),
        tail_scale=jitter(),
        body=_hsv_rgb(float(rng.random()), float(rng.uniform(*BODY_SATURATION)), float(rng.uniform(*BODY_VALUE))),
        wing_shade=float(rng.uniform(*WING_SHADE)),
        tail_shade=float(rng.uniform(*TAIL_SHADE)),
        head_shade=float(rng.uniform(*HEAD_SHADE)),
        belly=float(rng.uniform(*BELLY_BLEND)),
        marking_gain=float(rng.uniform(*MARKING_GAIN)),
    )


def _in_ellipse(u: np.ndarray, v: np.ndarray, centre: tuple[float, float], axes: tuple[float, float],
                tilt_deg: float = 0.0) -> np.ndarray:
    du, dv = u - centre[0], v - centre[1]
    if tilt_deg:
        c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
        du, dv = c * du + s * dv, -s * du + c * dv
    return (du / axes[0]) ** 2 + (dv / axes[1]) ** 2 <= 1.0


def _in_convex_polygon(u: np.ndarray, v: np.ndarray, points: Sequence[tuple[float, float]]) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    area2 = np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1])
    if area2 < 0:  # make the winding positive so "inside" is the same side of every edge
        pts = pts[::-1]
    inside = np.ones(u.shape, dtype=bool)
    for (u0, v0), (u1, v1) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        inside &= (u1 - u0) * (v - v0) - (v1 - v0) * (u - u0) >= 0
    return inside


def _in_capsule(u: np.ndarray, v: np.ndarray, a: tuple[float, float], b: tuple[float, float],
                half_width: float) -> np.ndarray:
    """Points within ``half_width`` of the segment a-b (a leg)."""
    du, dv = b[0] - a[0], b[1] - a[1]
    t = np.clip(((u - a[0]) * du + (v - a[1]) * dv) / (du * du + dv * dv), 0.0, 1.0)
    return (u - a[0] - t * du) ** 2 + (v - a[1] - t * dv) ** 2 <= half_width**2


class _Canvas:
    """Painter's algorithm over canonical coordinates: later parts cover earlier ones."""

    def __init__(self, u: np.ndarray, v: np.ndarray) -> None:
        self.u, self.v = u, v
        self.rgb = np.zeros(u.shape + (3,), dtype=np.float32)
        self.mask = np.zeros(u.shape, dtype=bool)

    def paint(self, region: np.ndarray, colour: np.ndarray) -> None:
        """Fill ``region`` with one colour (3,) or a per-pixel colour field (..., 3)."""
        self.rgb[region] = colour if colour.ndim == 1 else colour[region]
        self.mask[region] = True


def _paint_tail(canvas: _Canvas, pattern: str, look: _Look) -> None:
    u, v = canvas.u, canvas.v
    bcu, bcv = BODY_CENTRE
    tip_u = bcu - (bcu - TAIL_TIP_U) * look.tail_scale
    root_u = bcu - TAIL_ROOT * BODY_AXES[0] * look.body_scale[0]
    tail = _in_convex_polygon(u, v, [
        (root_u, bcv + TAIL_ROOT_SPREAD[0]), (root_u, bcv + TAIL_ROOT_SPREAD[1]),
        (tip_u, bcv + TAIL_TIP_SPREAD[1] * look.tail_scale), (tip_u, bcv + TAIL_TIP_SPREAD[0] * look.tail_scale),
    ])  # fmt: skip
    canvas.paint(tail, look.body * look.tail_shade)
    if pattern == "striped":
        stripes = np.zeros_like(tail)
        for offset in TAIL_STRIPE_OFFSETS:
            stripes |= np.abs(u - (tip_u + offset)) <= TAIL_STRIPE_HALF_WIDTH
        canvas.paint(tail & stripes, _rgb(TAIL_STRIPE_COLOUR))
    elif pattern == "spotted":
        spots = np.zeros_like(tail)
        for du, dv in TAIL_SPOT_OFFSETS:
            spots |= (u - (tip_u + du)) ** 2 + (v - (bcv + dv)) ** 2 <= TAIL_SPOT_RADIUS**2
        canvas.paint(tail & spots, _rgb(BAR_AND_SPOT_COLOUR))


def _paint_body(canvas: _Canvas, wing_bars: int, look: _Look) -> None:
    """Legs, body with a lighter belly, and the wing with ``wing_bars`` pale bars."""
    u, v = canvas.u, canvas.v
    bcu, bcv = BODY_CENTRE
    ba, bb = BODY_AXES[0] * look.body_scale[0], BODY_AXES[1] * look.body_scale[1]
    for (hip_du, hip_dv), (foot_du, foot_dv) in LEG_HIPS_FEET:
        hip, foot = (bcu + hip_du, bcv + hip_dv * bb), (bcu + foot_du, bcv + foot_dv * bb)
        canvas.paint(_in_capsule(u, v, hip, foot, LEG_HALF_WIDTH), _rgb(LEG_COLOUR))
    body = _in_ellipse(u, v, (bcu, bcv), (ba, bb))
    belly = (look.belly * np.clip((v - bcv) / bb, 0.0, 1.0))[..., None]
    canvas.paint(body, look.body + (_rgb(BELLY_COLOUR) - look.body) * belly)

    wing_u, wing_v = bcu + WING_OFFSET[0], bcv + WING_OFFSET[1]
    wing = _in_ellipse(u, v, (wing_u, wing_v), (WING_AXES[0] * ba, WING_AXES[1] * bb), WING_TILT_DEG)
    canvas.paint(wing, look.body * look.wing_shade)
    bars = np.zeros_like(wing)
    along = u - wing_u + WING_BAR_SLANT * (v - wing_v)
    for k in range(wing_bars):
        offset = (k - (wing_bars - 1) / 2) * WING_BAR_SPACING
        bars |= np.abs(along - offset) <= WING_BAR_HALF_WIDTH
    canvas.paint(wing & bars, _rgb(BAR_AND_SPOT_COLOUR))


def _paint_head(canvas: _Canvas, attributes: BirdAttributes, look: _Look) -> None:
    """Head, the class's crown marking and beak colour, and the eye on top."""
    u, v = canvas.u, canvas.v
    hcu, hcv = HEAD_CENTRE
    r = HEAD_RADIUS * look.head_scale
    head = (u - hcu) ** 2 + (v - hcv) ** 2 <= r * r
    canvas.paint(head, look.body * look.head_shade)
    eye_u, eye_v = hcu + EYE_OFFSET[0] * r, hcv + EYE_OFFSET[1] * r
    if attributes.crown_shape == "cap":
        marking = head & (v <= hcv + CAP_LOWER_EDGE * r)
    elif attributes.crown_shape == "eye_stripe":
        marking = head & (np.abs(v - eye_v) <= EYE_STRIPE_HALF_HEIGHT * r) & (u >= hcu + EYE_STRIPE_BACK * r)
    else:  # throat
        throat_centre = (hcu + THROAT_CENTRE[0] * r, hcv + THROAT_CENTRE[1] * r)
        marking = head & _in_ellipse(u, v, throat_centre, (THROAT_AXES[0] * r, THROAT_AXES[1] * r))
    canvas.paint(marking, _rgb(CROWN_COLOURS[attributes.crown_colour]) * look.marking_gain)
    base_u, base_top, base_bottom = (hcu + BEAK_BASE[0] * r, hcv + BEAK_BASE[1] * r, hcv + BEAK_BASE[2] * r)
    beak = _in_convex_polygon(u, v, [(base_u, base_top), (base_u, base_bottom),
                                     (hcu + r + BEAK_LENGTH, hcv + BEAK_TIP_V * r)])
    canvas.paint(beak, _rgb(BEAK_COLOURS[attributes.beak]) * look.marking_gain)
    canvas.paint((u - eye_u) ** 2 + (v - eye_v) ** 2 <= EYE_RADIUS**2, _rgb(EYE_COLOUR))


def _paint_bird(u: np.ndarray, v: np.ndarray, attributes: BirdAttributes, look: _Look,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the bird at canonical coordinates (u, v): (mask, RGB float32)."""
    canvas = _Canvas(u, v)
    _paint_tail(canvas, attributes.tail, look)
    _paint_body(canvas, attributes.wing_bars, look)
    _paint_head(canvas, attributes, look)
    return canvas.mask, canvas.rgb


def _place(pose: _Pose, size: int) -> tuple[float, float, float, float, float]:
    """(centre x, centre y, pixels per bird unit, half extent x, half extent y) of the rotated frame."""
    scale = pose.length_frac * size / BIRD_LENGTH
    half_w, half_h = (FRAME[2] - FRAME[0]) / 2 * scale, (FRAME[3] - FRAME[1]) / 2 * scale
    c, s = abs(math.cos(math.radians(pose.angle_deg))), abs(math.sin(math.radians(pose.angle_deg)))
    ext_x, ext_y = half_w * c + half_h * s, half_w * s + half_h * c
    cx = ext_x + pose.centre_frac[0] * max(size - 2 * ext_x, 0.0)
    cy = ext_y + pose.centre_frac[1] * max(size - 2 * ext_y, 0.0)
    return cx, cy, scale, ext_x, ext_y


def _rasterise(pose: _Pose, look: _Look, attributes: BirdAttributes, size: int,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Full-image (mask, RGB) of the posed bird: pixel centres mapped back into bird units."""
    cx, cy, scale, ext_x, ext_y = _place(pose, size)
    x0, x1 = max(int(math.floor(cx - ext_x)), 0), min(int(math.ceil(cx + ext_x)), size)
    y0, y1 = max(int(math.floor(cy - ext_y)), 0), min(int(math.ceil(cy + ext_y)), size)
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
    c, s = math.cos(math.radians(pose.angle_deg)), math.sin(math.radians(pose.angle_deg))
    u = (c * dx + s * dy) / scale
    v = (-s * dx + c * dy) / scale
    if pose.flipped:
        u = -u
    u = u + (FRAME[0] + FRAME[2]) / 2
    v = v + (FRAME[1] + FRAME[3]) / 2
    window_mask, window_rgb = _paint_bird(u, v, attributes, look)
    mask = np.zeros((size, size), dtype=bool)
    rgb = np.zeros((size, size, 3), dtype=np.float32)
    mask[y0:y1, x0:x1] = window_mask
    rgb[y0:y1, x0:x1] = window_rgb
    return mask, rgb


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight (x, y, width, height) of a mask, exclusive extent (CUB convention)."""
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        raise RuntimeError("the bird was drawn outside the image; this is a bug in fgvc.data.synthetic")
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


# ----------------------------------------------------------------------------------------------
# Scene


def _muted_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    h, s, v = rng.random(), rng.uniform(0.0, CLUTTER_MAX_SATURATION), rng.uniform(*CLUTTER_VALUE)
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, v))


def _upsampled_noise(rng: np.random.Generator, cells: int, size: int, channels: int) -> np.ndarray:
    """Smooth random field: a coarse grid of values resized bicubically, float32 (size, size, channels)."""
    grid = rng.standard_normal((cells, cells, channels)).astype(np.float32)
    planes = [np.asarray(Image.fromarray(grid[..., k]).resize((size, size), Image.Resampling.BICUBIC))
              for k in range(channels)]
    return np.stack(planes, axis=-1)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Cluttered scene, float32 RGB: smooth colour field, random shapes and twigs, noise texture."""
    base = np.array(_muted_colour(rng), dtype=np.float32)
    field = np.clip(base + BACKGROUND_VARIATION * _upsampled_noise(rng, BACKGROUND_GRID, size, 3), 0, 255)
    canvas = Image.fromarray(field.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(CLUTTER_SHAPES[0], CLUTTER_SHAPES[1] + 1))):
        kind = int(rng.integers(4))
        colour = _muted_colour(rng)
        x, y = rng.uniform(-CLUTTER_SPILL, 1 + CLUTTER_SPILL, size=2) * size
        w, h = rng.uniform(*CLUTTER_SIZE, size=2) * size
        if kind == 0:
            draw.ellipse([x - w / 2, y - h / 2, x + w / 2, y + h / 2], fill=colour)
        elif kind == 1:
            draw.rectangle([x - w / 2, y - h / 2, x + w / 2, y + h / 2], fill=colour)
        elif kind == 2:
            n = int(rng.integers(CLUTTER_POLYGON_VERTICES[0], CLUTTER_POLYGON_VERTICES[1] + 1))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))  # sorted angles: a star-shaped, simple polygon
            radii = rng.uniform(0.3, 1.0, n) * w
            draw.polygon([(x + rr * math.cos(a), y + rr * math.sin(a)) for a, rr in zip(angles, radii, strict=True)],
                         fill=colour)
        else:  # a twig
            end = rng.uniform(-CLUTTER_SPILL, 1 + CLUTTER_SPILL, size=2) * size
            draw.line([(x, y), (float(end[0]), float(end[1]))], fill=colour,
                      width=max(1, int(rng.uniform(*CLUTTER_LINE_WIDTH) * size)))
    scene = np.asarray(canvas, dtype=np.float32)
    fine = float(rng.uniform(*TEXTURE_SIGMA)) * rng.standard_normal((size, size, 1), dtype=np.float32)
    coarse_cells = max(2, size // COARSE_TEXTURE_CELL)
    coarse = float(rng.uniform(*COARSE_TEXTURE_SIGMA)) * _upsampled_noise(rng, coarse_cells, size, 1)
    return scene + fine + coarse


def _light(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Global lighting on the composed scene: brightness, a directional gradient, colour cast, noise."""
    size = image.shape[0]
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5  # -0.5..0.5 across the image
    gradient = math.cos(direction) * ramp[None, :] + math.sin(direction) * ramp[:, None]
    gain = float(rng.uniform(*BRIGHTNESS)) * (1.0 + float(rng.uniform(*LIGHT_GRADIENT)) * gradient)
    cast = rng.uniform(1 - COLOUR_CAST, 1 + COLOUR_CAST, size=3).astype(np.float32)
    noise = float(rng.uniform(*SENSOR_NOISE_SIGMA)) * rng.standard_normal(image.shape, dtype=np.float32)
    return image * gain[..., None] * cast + noise


def render_bird(rng: np.random.Generator, attributes: BirdAttributes, size: int, *,
                background: bool = True) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """One ``size`` x ``size`` RGB image of a bird with ``attributes``, and its true box (x, y, w, h).

    The box is the tight box of the drawn bird's mask (after flip and rotation), exclusive extent.
    The pose and look are drawn from ``rng`` first, in a fixed order that does not depend on the
    attributes or on ``background``: the same generator state gives the same bird in the same place,
    so two classes can be compared pixel by pixel and a plain render can verify a cluttered one's box.
    ``background=False`` paints the bird on flat ``PLAIN_BACKGROUND``, without lighting or noise.
    """
    if size < MIN_SIZE:
        raise ConfigError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    pose = _draw_pose(rng)
    look = _draw_look(rng)
    scene_rng = np.random.default_rng(int(rng.integers(2**63)))
    mask, bird = _rasterise(pose, look, attributes, size)
    if background:
        image = _light(np.where(mask[..., None], bird, _background(scene_rng, size)), scene_rng)
    else:
        image = np.where(mask[..., None], bird, _rgb(PLAIN_BACKGROUND))
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB"), _mask_box(mask)


# ----------------------------------------------------------------------------------------------
# Dataset


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_dataset` wrote.

    ``class_ids`` are spelled as in the files: competition "04615", cub the folder prefix "001"
    (classes.txt numbers classes 1..N), imagefolder the folder name. ``class_names`` use underscores
    ("Sooty_Albatross"); readers show them with spaces.
    """

    root: Path
    layout: str
    num_classes: int
    class_ids: tuple[str, ...]
    class_names: tuple[str, ...]
    train_images: int
    test_images: int
    class_attributes: tuple[BirdAttributes, ...] = ()


@dataclass(frozen=True)
class _Sample:
    class_index: int
    number: int  # 1-based within its class, across both splits
    is_test: bool
    path: str  # relative to OUT, forward slashes


def _validate(layout: str, num_classes: int, per_class: int, size: int, seed: int,
              test_fraction: float) -> None:
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not MIN_CLASSES <= num_classes <= MAX_CLASSES:
        raise ConfigError(
            f"num_classes must be between {MIN_CLASSES} and {MAX_CLASSES} (the number of distinct "
            f"part-attribute combinations), got {num_classes}"
        )
    if per_class < MIN_PER_CLASS:
        raise ConfigError(f"per_class must be at least {MIN_PER_CLASS} (images per class, train and test), "
                         f"got {per_class}")
    if size < MIN_SIZE:
        raise ConfigError(f"size must be at least {MIN_SIZE} pixels, got {size}")
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")


def _test_count(per_class: int, test_fraction: float) -> int:
    """round(per_class * test_fraction), at least 1 when asked for a test split, and train keeps one."""
    if test_fraction == 0:
        return 0
    return min(max(round(per_class * test_fraction), 1), per_class - 1)


class FolderNotEmptyError(FgvcError):
    """The output folder already holds files: generating into it could mix two datasets."""


def _check_empty(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        found = "is a file" if not out.is_dir() else "already exists and is not empty"
        raise FolderNotEmptyError(
            f"{out} {found}; pick an empty folder (or one that does not exist yet) or delete it first"
        )


def _plan(layout: str, class_ids: Sequence[str], class_names: Sequence[str], per_class: int,
          num_test: int, seed: int) -> list[_Sample]:
    """Every image's class, number, split and path; test images are the last ``num_test`` per class."""
    samples = []
    for c, (class_id, name) in enumerate(zip(class_ids, class_names, strict=True)):
        for k in range(per_class):
            number = k + 1
            is_test = k >= per_class - num_test
            stem = f"{number:0{IMAGE_NUMBER_DIGITS}d}"
            if layout == "competition" and is_test:
                raw = np.random.default_rng([seed, _UUID_STREAM, c, k]).bytes(16)
                path = f"test/{uuid.UUID(int=int.from_bytes(raw, 'big'), version=4)}.jpg"
            elif layout == "competition":
                path = f"train/{class_id}_{name}/{class_id}_{stem}.jpg"
            elif layout == "cub":
                path = f"{CUB_FOLDER}/images/{c + 1:03d}.{name}/{name}_{stem}.jpg"  # NNN = class ID
            else:
                path = f"{'test' if is_test else 'train'}/{name}/{name}_{stem}.jpg"
            samples.append(_Sample(c, number, is_test, path))
    return samples


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_annotations(root: Path, layout: str, samples: Sequence[_Sample],
                       boxes: Sequence[tuple[int, int, int, int]], class_ids: Sequence[str],
                       class_names: Sequence[str]) -> None:
    if layout == "cub":
        cub, prefix = root / CUB_FOLDER, f"{CUB_FOLDER}/images/"
        numbered = list(enumerate(samples, start=1))  # CUB image IDs are 1-based
        _write_lines(cub / "images.txt", [f"{i} {s.path.removeprefix(prefix)}" for i, s in numbered])
        _write_lines(cub / "image_class_labels.txt", [f"{i} {s.class_index + 1}" for i, s in numbered])
        _write_lines(cub / "train_test_split.txt", [f"{i} {0 if s.is_test else 1}" for i, s in numbered])
        _write_lines(cub / "classes.txt", [f"{k} {k:03d}.{n}" for k, n in enumerate(class_names, start=1)])
        _write_lines(cub / "bounding_boxes.txt",
                     [f"{i} " + " ".join(f"{b:.1f}" for b in box) for i, box in enumerate(boxes, start=1)])
        return
    _write_csv(root / "bounding_boxes.csv", ("file", "x", "y", "width", "height"),
               [(s.path, *box) for s, box in zip(samples, boxes, strict=True)])
    if layout == "competition":
        test_rows = sorted((s.path.removeprefix("test/"), class_ids[s.class_index]) for s in samples if s.is_test)
        _write_csv(root / "test_labels.csv", ("file", "class_id"), test_rows)


def generate_dataset(out: str | Path, *, layout: str = "competition", num_classes: int = 10,
                     per_class: int = 40, size: int = 224, seed: int = 0,
                     test_fraction: float = 0.2) -> SynthSummary:
    """Write a synthetic fine-grained dataset in ``layout`` to ``out`` (empty or not yet existing).

    ``per_class`` images per class in all; ``round(per_class * test_fraction)`` of them (at least one
    when ``test_fraction > 0``, at most ``per_class - 1``) form the test split. Images are written to a
    hidden sibling folder first and moved into place at the end, so a failed run leaves ``out`` as it was.
    """
    _validate(layout, num_classes, per_class, size, seed, test_fraction)
    out = Path(out)
    _check_empty(out)

    rng = np.random.default_rng(seed)
    attributes = choose_class_attributes(rng, num_classes)
    class_names = _class_names(rng, num_classes)
    competition_ids = _class_ids(rng, num_classes)
    class_ids = {
        "competition": competition_ids,
        "cub": tuple(f"{k:03d}" for k in range(1, num_classes + 1)),
        "imagefolder": class_names,
    }[layout]
    num_test = _test_count(per_class, test_fraction)
    samples = _plan(layout, competition_ids, class_names, per_class, num_test, seed)

    target = out.resolve()  # "." and "a/.." have no usable name or parent
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.{os.getpid()}-{time.monotonic_ns()}.partial"
    staging.mkdir()  # not tempfile.mkdtemp: its 0700 mode would stick to the finished dataset
    try:
        boxes = []
        for s in samples:
            image_rng = np.random.default_rng([seed, _IMAGE_STREAM, s.class_index, s.number - 1])
            image, box = render_bird(image_rng, attributes[s.class_index], size)
            path = staging / s.path
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, format="JPEG", quality=JPEG_QUALITY)
            boxes.append(box)
        if layout != "cub":
            for split in ("train", "test"):  # both splits exist even when one is empty
                (staging / split).mkdir(exist_ok=True)
        _write_annotations(staging, layout, samples, boxes, competition_ids, class_names)
        _check_empty(target)  # someone may have written there meanwhile
        if target.exists():  # keep the user's empty folder itself (its permissions, a shell inside it)
            for entry in staging.iterdir():
                entry.rename(target / entry.name)
            staging.rmdir()
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    num_test_images = sum(s.is_test for s in samples)
    return SynthSummary(
        root=out, layout=layout, num_classes=num_classes, class_ids=class_ids, class_names=class_names,
        train_images=len(samples) - num_test_images, test_images=num_test_images,
        class_attributes=attributes,
    )
