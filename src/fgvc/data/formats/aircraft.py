"""FGVC-Aircraft (fgvc-aircraft-2013b): the official text-file annotations.

The real dataset has 10,000 images: 3,334 train, 3,333 val and 3,333 test, with 100 variants,
70 families or 30 manufacturers. Only the chosen level's list and its train/val/test files are read
(``*_trainval.txt`` is their union). By default val joins train, giving the usual 6,667/3,333 split.
A class name may hold spaces and slashes; only the first space on a line separates it from the ID.
The class ID and display name are the name as spelled, in ClassTable's natural order. ``image_id`` is
``<image_id>.jpg``. Boxes become 0-based exclusive ``(xmin - 1, ymin - 1, xmax, ymax)``. Every image
carries a 20-pixel copyright banner at the bottom; ``crop_banner=True`` asks the loader to cut it off.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..classes import ClassTable, ClassTableError
from ..index import DatasetIndex, DatasetLayoutError, Sample
from ._files import annotation_lines, require_images, with_tree
from ._registry import ReaderOption, register_format

__all__ = ["AIRCRAFT_TREE", "BANNER_PX", "LEVELS", "OPTIONS", "looks_like_aircraft", "read_aircraft"]

AIRCRAFT_TREE = """\
fgvc-aircraft-2013b/              ROOT, or its data/ folder itself
  data/
    images/
      0034309.jpg                 <image_id>.jpg
      ...
    variants.txt                  one class name per line (families.txt, manufacturers.txt likewise)
    images_variant_train.txt      <image_id> <class name>   e.g. "1042658 F/A-18", "0034309 Cessna 172"
    images_variant_val.txt
    images_variant_test.txt       (and images_family_*.txt, images_manufacturer_*.txt for the other levels)
    images_box.txt                optional: <image_id> <xmin> <ymin> <xmax> <ymax>, 1-based inclusive pixels"""
__doc__ = with_tree(__doc__, AIRCRAFT_TREE)

LEVELS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
BANNER_PX = 20  # height of the copyright banner along the bottom of every official image
_SPLIT_FILES = ("train", "val", "test")
_FIX = "re-extract fgvc-aircraft-2013b.tar.gz, or point to the fgvc-aircraft-2013b folder (or its data/ folder)"
OPTIONS = (
    ReaderOption("level", "variant", tuple(LEVELS), "which of the three label sets to read"),
    ReaderOption("use_official_val", False, help="keep the official val images as a 'val' split"),
    ReaderOption("crop_banner", False, help="cut the 20-pixel copyright banner off every image at load time"),
)


def looks_like_aircraft(root: Path) -> bool:
    """True when ROOT or ROOT/data holds FGVC-Aircraft's own annotation files."""
    return _find_data_dir(Path(root)) is not None


def read_aircraft(
    root: str | Path, *, level: str = "variant", use_official_val: bool = False, crop_banner: bool = False
) -> DatasetIndex:
    """Read all of FGVC-Aircraft at one label ``level``; images are only checked to exist.

    ``use_official_val=False`` labels the official val images "train" (train = the official trainval);
    True keeps them as "val". ``crop_banner`` sets ``crop_bottom_px`` so the loader removes the banner.
    """
    for option, value in zip(OPTIONS, (level, use_official_val, crop_banner), strict=True):
        option.check(value, "aircraft")  # read_dataset checks too; this covers direct calls
    root = Path(root)
    data = _find_data_dir(root)
    if data is None:
        raise DatasetLayoutError(
            root, f"no FGVC-Aircraft annotation files (variants.txt, images_variant_test.txt, ...) in {root} "
            f"or {root / 'data'}", AIRCRAFT_TREE, _FIX)

    list_file = data / LEVELS[level]
    listed = _read_class_list(data, list_file) if list_file.is_file() else None
    known = set(listed or ())
    assigned: dict[str, tuple[str, str, str]] = {}  # image -> (class name, split, file it came from)
    for split in _SPLIT_FILES:
        name = f"images_{level}_{split}.txt"
        for line_no, line, image, class_name in _records(data, name, "<image_id> <class name>"):
            problem = ""
            if image in assigned:
                problem = f"image {image} is already listed in {assigned[image][2]}"
            elif listed is not None and class_name not in known:
                problem = f"class {class_name!r} is not in {list_file.name}"
            if problem:
                raise DatasetLayoutError(
                    data, f"{name} line {line_no}: {problem}: {line!r}", AIRCRAFT_TREE,
                    f"use the {name} and {list_file.name} of one copy of fgvc-aircraft-2013b")
            assigned[image] = (class_name, split, name)
    if not assigned:
        raise DatasetLayoutError(data, f"the images_{level}_*.txt files list no images", AIRCRAFT_TREE, _FIX)

    class_ids = listed if listed is not None else [c for c, _, _ in assigned.values()]
    try:
        classes = ClassTable.from_ids(class_ids)
    except ClassTableError as e:
        raise DatasetLayoutError(data, f"class names of {list_file.name}: {e}", AIRCRAFT_TREE, _FIX) from None
    boxes = _read_boxes(data, assigned) if (data / "images_box.txt").is_file() else None

    images_dir = data / "images"
    samples = [
        Sample(images_dir / f"{image}.jpg", classes.index_of(class_name),
               "train" if split == "val" and not use_official_val else split, f"{image}.jpg",
               boxes[image] if boxes is not None else None)
        for image, (class_name, split, _) in assigned.items()
    ]
    require_images(samples, data, AIRCRAFT_TREE, "listed image(s)",
                   "restore the missing files under data/images/ (re-extract fgvc-aircraft-2013b.tar.gz)")
    return DatasetIndex(root=root, format="aircraft", classes=classes, samples=samples,
                        crop_bottom_px=BANNER_PX if crop_banner else 0)


def _find_data_dir(root: Path) -> Path | None:
    signatures = [*LEVELS.values(), "images_box.txt"]
    signatures += [f"images_{level}_{split}.txt" for level in LEVELS for split in (*_SPLIT_FILES, "trainval")]
    for candidate in (root / "data", root):
        if any((candidate / name).is_file() for name in signatures):
            return candidate
    return None


def _lines(data: Path, name: str) -> Iterator[tuple[int, str]]:
    return annotation_lines(data, name, AIRCRAFT_TREE, _FIX)


def _records(data: Path, name: str, form: str) -> Iterator[tuple[int, str, str, str]]:
    """(line number, line, ID, rest) split at the first whitespace, since the rest may hold spaces."""
    for line_no, line in _lines(data, name):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DatasetLayoutError(
                data, f"{name} line {line_no}: cannot parse {line!r}; expected {form}", AIRCRAFT_TREE, _FIX)
        yield line_no, line, parts[0], parts[1]


def _read_class_list(data: Path, path: Path) -> list[str]:
    names = [line for _, line in _lines(data, path.name)]
    if not names:
        raise DatasetLayoutError(data, f"{path.name} lists no classes", AIRCRAFT_TREE, _FIX)
    return names


def _read_boxes(data: Path, images: dict[str, object]) -> dict[str, tuple[float, float, float, float]]:
    """images_box.txt (1-based inclusive corners) -> 0-based exclusive ``(x0, y0, x1, y1)``."""
    form = "<image_id> <xmin> <ymin> <xmax> <ymax>"
    boxes = {}
    for line_no, line, image, values in _records(data, "images_box.txt", form):
        try:
            xmin, ymin, xmax, ymax = (float(v) for v in values.split())
        except ValueError:
            raise DatasetLayoutError(
                data, f"images_box.txt line {line_no}: cannot parse {line!r}; expected {form}",
                AIRCRAFT_TREE, _FIX) from None
        boxes[image] = (xmin - 1, ymin - 1, xmax, ymax)
    absent = [i for i in images if i not in boxes]
    if absent:
        shown = ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else "")
        raise DatasetLayoutError(
            data, f"{len(absent)} listed image(s) have no box in images_box.txt: {shown}",
            AIRCRAFT_TREE, "use the images_box.txt of the same fgvc-aircraft-2013b copy, or remove it")
    return boxes


register_format("aircraft", reader=read_aircraft, detector=looks_like_aircraft, tree=AIRCRAFT_TREE,
                options=OPTIONS, priority=20)
