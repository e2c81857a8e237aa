"""Stanford Cars reader: both .mat layouts on hand-checked fakes, and layout errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("scipy.io")

from fgvc.data.formats import cars  # noqa: E402
from fgvc.data.formats.cars import CARS_TREE, MissingScipyError, looks_like_cars, read_cars  # noqa: E402
from fgvc.data.index import DatasetLayoutError  # noqa: E402
from fgvc.errors import FgvcError  # noqa: E402
from tests.data.fakes import (  # noqa: E402
    CARS_ALL,
    CARS_CLASS_NAMES,
    CARS_TRAIN,
    by_id,
    cars_devkit_tree,
    cars_single_file_tree,
    split_sizes,
)

pytestmark = pytest.mark.usefixtures("no_decoding")


def check_classes(index):
    assert index.classes.ids == tuple(str(i) for i in range(1, 12))  # numeric: "10" after "9"
    assert index.classes.names[0] == "AM General Hummer SUV 2000"
    assert index.classes.names[9] == "Aston Martin Virage Convertible 2012"
    assert index.classes.names == tuple(CARS_CLASS_NAMES)


@pytest.mark.parametrize("test_in_devkit", [False, True])
def test_devkit_layout(tmp_path, test_in_devkit):
    root = cars_devkit_tree(tmp_path, test_in_devkit=test_in_devkit)
    index = read_cars(root)

    assert index.format == "cars" and index.root == root
    check_classes(index)
    assert split_sizes(index) == {"train": 6, "test": 4}
    samples = by_id(index)
    s = samples["cars_train/00001.jpg"]  # class 10, box 5 4 30 25
    assert (s.label, s.split, s.box_xyxy) == (9, "train", (4.0, 3.0, 30.0, 25.0))
    assert s.path == root / "cars_train" / "00001.jpg"
    s = samples["cars_test/00001.jpg"]  # the same file name in the other split: class 2, box 4 4 36 26
    assert (s.label, s.split, s.box_xyxy) == (1, "test", (3.0, 3.0, 36.0, 26.0))
    assert s.path == root / "cars_test" / "00001.jpg"
    s = samples["cars_test/00002.jpg"]  # class 11, box 1 2 39 29
    assert (s.label, s.split, s.box_xyxy) == (10, "test", (0.0, 1.0, 39.0, 29.0))
    assert index.class_counts() == [3, 2, 0, 0, 0, 0, 0, 0, 0, 3, 2]


def test_single_file_layout(tmp_path):
    root = cars_single_file_tree(tmp_path)
    index = read_cars(root)

    check_classes(index)
    assert split_sizes(index) == {"train": 6, "test": 4}
    assert [s.image_id for s in index] == [f"car_ims/{n:06d}.jpg" for n in range(1, 11)]
    samples = by_id(index)
    s = samples["car_ims/000008.jpg"]  # test, class 11, box 1 2 39 29
    assert (s.label, s.split, s.box_xyxy) == (10, "test", (0.0, 1.0, 39.0, 29.0))
    assert s.path == root / "car_ims" / "000008.jpg"
    s = samples["car_ims/000006.jpg"]  # train, class 1, box 10 5 35 29
    assert (s.label, s.split, s.box_xyxy) == (0, "train", (9.0, 4.0, 35.0, 29.0))


def test_devkit_wins_when_both_layouts_are_complete(tmp_path):
    cars_single_file_tree(tmp_path)
    cars_devkit_tree(tmp_path)
    assert by_id(read_cars(tmp_path)).keys() >= {"cars_train/00001.jpg"}
    assert len(read_cars(tmp_path)) == 10


def test_a_single_annotation_survives_squeezing(tmp_path):
    root = cars_devkit_tree(tmp_path, train=CARS_TRAIN[:1])
    index = read_cars(root)
    assert split_sizes(index) == {"train": 1, "test": 4}
    assert by_id(index)["cars_train/00001.jpg"].box_xyxy == (4.0, 3.0, 30.0, 25.0)
    index = read_cars(cars_single_file_tree(tmp_path / "single", rows=CARS_ALL[7:8]))
    assert [(s.image_id, s.label, s.split) for s in index] == [("car_ims/000008.jpg", 10, "test")]


def test_looks_like_cars(tmp_path):
    assert looks_like_cars(cars_devkit_tree(tmp_path / "a"))
    assert looks_like_cars(cars_single_file_tree(tmp_path / "b"))
    (tmp_path / "c" / "devkit").mkdir(parents=True)
    assert not looks_like_cars(tmp_path / "c")


def layout_error(root: Path) -> str:
    with pytest.raises(DatasetLayoutError) as e:
        read_cars(root)
    message = str(e.value)
    assert "Expected layout" in message and "cars_annos.mat" in message and "cars_meta.mat" in message
    return message


def test_neither_layout(tmp_path):
    (tmp_path / "car_ims").mkdir()
    message = layout_error(tmp_path)
    assert "found neither cars_annos.mat nor a devkit/ folder" in message
    assert "the devkit layout" in message and "the single-file layout" in message


def test_missing_test_labels(tmp_path):
    root = cars_devkit_tree(tmp_path)
    (root / "cars_test_annos_withlabels.mat").unlink()
    message = layout_error(root)
    assert "missing cars_test_annos_withlabels.mat" in message and "has no labels" in message


def test_missing_meta(tmp_path):
    root = cars_devkit_tree(tmp_path)
    (root / "devkit" / "cars_meta.mat").unlink()
    assert "missing devkit/cars_meta.mat" in layout_error(root)


def test_class_number_outside_class_names(tmp_path):
    root = cars_devkit_tree(tmp_path, class_names=CARS_CLASS_NAMES[:10])
    message = layout_error(root)
    assert "devkit/cars_train_annos.mat: annotation 4 (00004.jpg): class 11 is outside 1..10" in message


def test_missing_annotation_field(tmp_path):
    from scipy.io import savemat

    root = cars_single_file_tree(tmp_path)
    savemat(root / "cars_annos.mat", {"class_names": [["a"]], "annotations": {"relative_im_path": "x.jpg"}})
    message = layout_error(root)
    assert "cars_annos.mat: 'annotations' lacks field(s) bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, test" in message


def test_not_a_mat_file(tmp_path):
    root = cars_single_file_tree(tmp_path)
    (root / "cars_annos.mat").write_text("<html>404</html>")
    assert "cannot read cars_annos.mat as a MATLAB file" in layout_error(root)


def test_annotated_image_that_does_not_exist(tmp_path):
    root = cars_devkit_tree(tmp_path)
    (root / "cars_test" / "00003.jpg").unlink()
    assert "1 annotated image(s) do not exist, e.g. cars_test/00003.jpg" in layout_error(root)


def test_without_scipy_the_error_says_what_to_install(tmp_path, monkeypatch):
    root = cars_single_file_tree(tmp_path)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(MissingScipyError, match=r"pip install 'fgvc\[cars\]'") as e:
        read_cars(root)
    assert isinstance(e.value, FgvcError)  # an expected failure: the CLI prints one line, no traceback


def test_docstring_shows_the_same_tree_as_the_errors():
    if cars.__doc__:  # None under python -OO
        assert "\n".join("    " + line for line in CARS_TREE.splitlines()) in cars.__doc__
