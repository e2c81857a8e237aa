"""Stanford Cars: the official MATLAB annotation files, in either of the two published layouts.

The real dataset has 196 classes and 16,185 images: 8,144 train and 8,041 test. The class ID is the
1-based class number as a string (``"1"`` .. ``"196"``, numeric order), the display name its entry in
``class_names``. ``image_id`` is the image path relative to ROOT (``cars_train/00001.jpg``, or
``car_ims/000001.jpg``): the devkit's train and test folders reuse the same file names. Boxes are
1-based inclusive corners and become 0-based exclusive ``(x1 - 1, y1 - 1, x2, y2)``. When both layouts
are present the devkit one is read. Needs scipy (``pip install 'fgvc[cars]'``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import FgvcError
from ..classes import ClassTable
from ..index import DatasetIndex, DatasetLayoutError, Sample
from ._files import require_images, with_tree
from ._registry import register_format

__all__ = ["CARS_TREE", "MissingScipyError", "looks_like_cars", "read_cars"]

CARS_TREE = """\
ROOT/                                  the devkit layout:
  devkit/
    cars_meta.mat                      class_names: 1x196 cell of strings
    cars_train_annos.mat               annotations: struct array (bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname)
    cars_test_annos_withlabels.mat     the same fields; may also sit directly in ROOT/
  cars_train/00001.jpg ...
  cars_test/00001.jpg ...
ROOT/                                  or the single-file layout:
  cars_annos.mat                       annotations: struct array (relative_im_path, bbox_x1, bbox_y1, bbox_x2,
                                       bbox_y2, class, test = 1 | 0); class_names: 1x196 cell of strings
  car_ims/000001.jpg ..."""
__doc__ = with_tree(__doc__, CARS_TREE)

_SINGLE = "cars_annos.mat"
_META = "devkit/cars_meta.mat"
_TRAIN = "devkit/cars_train_annos.mat"
_TEST = "cars_test_annos_withlabels.mat"
_BOX_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")
_FIX = "download the Stanford Cars annotation files again and lay them out as shown above"

Box = tuple[float, float, float, float]


class MissingScipyError(FgvcError):
    """scipy, which only Stanford Cars' .mat files need, is not installed: a one-line error, not a bug."""


def looks_like_cars(root: Path) -> bool:
    """True when ROOT holds cars_annos.mat or the devkit's cars_meta.mat / cars_train_annos.mat."""
    root = Path(root)
    return any((root / name).is_file() for name in (_SINGLE, _META, _TRAIN))


def read_cars(root: str | Path) -> DatasetIndex:
    """Read all of Stanford Cars (train and test); images are only checked to exist."""
    root = Path(root)
    layout = _layout(root)
    if layout is None:
        raise DatasetLayoutError(
            root, f"found neither {_SINGLE} nor a devkit/ folder", CARS_TREE,
            "download the devkit (devkit/, cars_train/, cars_test/, cars_test_annos_withlabels.mat) or "
            f"{_SINGLE} with car_ims/, and point to the folder that holds them")
    loadmat = _scipy_loadmat()
    classes, samples = (_read_single_file if layout == "single" else _read_devkit)(root, loadmat)
    require_images(samples, root, CARS_TREE, "annotated image(s)",
                   "restore the missing images (re-extract the image archives next to the annotation files)")
    return DatasetIndex(root=root, format="cars", classes=classes, samples=samples)


def _layout(root: Path) -> str | None:
    devkit_complete = (root / _TRAIN).is_file() and (root / "cars_train").is_dir()
    if (root / _SINGLE).is_file() and not devkit_complete:
        return "single"
    if (root / "devkit").is_dir():
        return "devkit"
    return None


def _scipy_loadmat() -> Callable[..., dict[str, Any]]:
    try:
        from scipy.io import loadmat
    except ImportError as e:
        raise MissingScipyError(
            "reading Stanford Cars' .mat files needs scipy, which is not installed: pip install 'fgvc[cars]'"
        ) from e
    return loadmat


def _read_devkit(root: Path, loadmat: Callable) -> tuple[ClassTable, list[Sample]]:
    meta = root / _META
    classes = _class_table(root, meta, _load(root, meta, loadmat))
    test = next((p for p in (root / _TEST, root / "devkit" / _TEST) if p.is_file()), None)
    if test is None:
        raise DatasetLayoutError(
            root, f"missing {_TEST} (looked in {root} and {root / 'devkit'})", CARS_TREE,
            f"download {_TEST} into ROOT/ or ROOT/devkit/ (devkit/cars_test_annos.mat has no labels)")
    samples = []
    for split, path, folder in (("train", root / _TRAIN, "cars_train"), ("test", test, "cars_test")):
        rows = _annotations(root, path, _load(root, path, loadmat), (*_BOX_FIELDS, "class", "fname"))
        for i, row in enumerate(rows):
            name = _text(row["fname"])
            image_id = f"{folder}/{name}"
            try:
                samples.append(Sample(root / image_id, _label(row, classes), split, image_id, _box(row)))
            except ValueError as e:
                raise _row_error(root, path, i, name, e) from None
    return classes, samples


def _read_single_file(root: Path, loadmat: Callable) -> tuple[ClassTable, list[Sample]]:
    path = root / _SINGLE
    mat = _load(root, path, loadmat)
    classes = _class_table(root, path, mat)
    samples = []
    for i, row in enumerate(_annotations(root, path, mat, ("relative_im_path", *_BOX_FIELDS, "class", "test"))):
        image_id = _text(row["relative_im_path"]).replace("\\", "/")
        try:
            flag = _number(row["test"])
            if flag not in (0, 1):
                raise ValueError(f"test flag {flag:g} is neither 1 (test) nor 0 (train)")
            split = "test" if flag == 1 else "train"
            samples.append(Sample(root / image_id, _label(row, classes), split, image_id, _box(row)))
        except ValueError as e:
            raise _row_error(root, path, i, image_id, e) from None
    return classes, samples


def _load(root: Path, path: Path, loadmat: Callable) -> dict[str, Any]:
    name = _name(root, path)
    if not path.is_file():
        raise DatasetLayoutError(root, f"missing {name} (expected at {path})", CARS_TREE, _FIX)
    try:
        # squeeze_me turns MATLAB's 1x1 cells and 1xN struct arrays into scalars and flat arrays.
        return loadmat(path, squeeze_me=True)
    except Exception as e:  # scipy raises several unrelated types for a corrupt or HDF5 (v7.3) file
        raise DatasetLayoutError(root, f"cannot read {name} as a MATLAB file: {e}", CARS_TREE, _FIX) from e


def _class_table(root: Path, path: Path, mat: dict[str, Any]) -> ClassTable:
    name = _name(root, path)
    if "class_names" not in mat:
        raise DatasetLayoutError(root, f"{name} has no 'class_names' variable (it has: {_variables(mat)})",
                                 CARS_TREE, _FIX)
    names = [_text(v) for v in np.atleast_1d(mat["class_names"]).ravel()]
    if not names:
        raise DatasetLayoutError(root, f"{name}: 'class_names' is empty", CARS_TREE, _FIX)
    ids = [str(i) for i in range(1, len(names) + 1)]
    return ClassTable.from_ids(ids, dict(zip(ids, names, strict=True)))


def _annotations(root: Path, path: Path, mat: dict[str, Any], fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """The ``annotations`` struct array as one dict per image."""
    name = _name(root, path)
    if "annotations" not in mat:
        raise DatasetLayoutError(root, f"{name} has no 'annotations' variable (it has: {_variables(mat)})",
                                 CARS_TREE, _FIX)
    annotations = np.atleast_1d(mat["annotations"]).ravel()  # squeeze_me makes a single annotation 0-d
    present = annotations.dtype.names or ()
    missing = [f for f in fields if f not in present]
    if missing:
        raise DatasetLayoutError(
            root, f"{name}: 'annotations' lacks field(s) {', '.join(missing)} (it has: {', '.join(present) or 'none'})",
            CARS_TREE, _FIX)
    columns = {f: annotations[f].tolist() for f in fields}
    return [{f: columns[f][i] for f in fields} for i in range(len(annotations))]


def _row_error(root: Path, path: Path, index: int, image: str, error: ValueError) -> DatasetLayoutError:
    return DatasetLayoutError(
        root, f"{_name(root, path)}: annotation {index + 1} ({image}): {error}", CARS_TREE,
        "use annotation files and class_names from the same Stanford Cars download")


def _label(row: dict[str, Any], classes: ClassTable) -> int:
    number = _number(row["class"])
    if not number.is_integer() or not 1 <= number <= len(classes):
        raise ValueError(f"class {number:g} is outside 1..{len(classes)} (the number of class_names)")
    return classes.index_of(str(int(number)))


def _box(row: dict[str, Any]) -> Box:
    """1-based inclusive ``bbox_x1..bbox_y2`` -> 0-based exclusive ``(x0, y0, x1, y1)``."""
    x1, y1, x2, y2 = (_number(row[f]) for f in _BOX_FIELDS)
    return (x1 - 1, y1 - 1, x2, y2)


def _number(value: Any) -> float:
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "biuf":
        raise ValueError(f"expected one number, found {value!r}")
    return float(array.item())


def _text(value: Any) -> str:
    """A MATLAB string as loadmat returns it: ``str`` normally, an empty array for ``''``."""
    if isinstance(value, str):
        return value.strip()
    array = np.asarray(value)
    return "".join(str(v) for v in array.ravel()).strip() if array.size else ""


def _name(root: Path, path: Path) -> str:
    """The file as the error text names it: relative to ROOT, which the message already shows."""
    return path.relative_to(root).as_posix()


def _variables(mat: dict[str, Any]) -> str:
    return ", ".join(k for k in mat if not k.startswith("__")) or "none"


register_format("cars", reader=read_cars, detector=looks_like_cars, tree=CARS_TREE, priority=30)
