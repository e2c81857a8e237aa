"""CUB-200-2011 reader: classes, splits, labels and boxes on a hand-checked fake, and layout errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgvc.data.formats import cub
from fgvc.data.formats.cub import CUB_TREE, looks_like_cub, read_cub
from fgvc.data.index import DatasetLayoutError
from tests.data.fakes import CUB_CLASSES, by_id, cub_tree, write_lines

pytestmark = pytest.mark.usefixtures("no_decoding")


@pytest.mark.parametrize("from_parent", [True, False])
def test_reads_classes_splits_labels_and_boxes(tmp_path, from_parent):
    base = cub_tree(tmp_path)
    root = tmp_path if from_parent else base
    index = read_cub(root)

    assert index.format == "cub" and index.root == root
    assert index.classes.ids == ("001", "002", "003", "010")
    assert index.classes.names == ("Black footed Albatross", "Laysan Albatross", "Sooty Albatross",
                                   "Red winged Blackbird")
    assert len(index) == 10
    assert len(index.split("train")) == 6 and len(index.split("test")) == 4
    assert sorted(index.splits) == ["test", "train"]
    assert index.class_counts() == [3, 2, 2, 3]

    samples = by_id(index)
    s = samples["010.Red_winged_Blackbird/Red_Winged_Blackbird_0001_3695.jpg"]  # line 8: class 10, train
    assert (s.label, s.split) == (3, "train")
    assert s.box_xyxy == (12.5, 6.5, 32.5, 20.5)  # 12.5 6.5 20.0 14.0
    assert s.path == base / "images" / "010.Red_winged_Blackbird" / "Red_Winged_Blackbird_0001_3695.jpg"
    s = samples["001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg"]  # line 1: class 1, test
    assert (s.label, s.split, s.box_xyxy) == (0, "test", (3.0, 4.0, 23.0, 19.0))
    s = samples["002.Laysan_Albatross/Laysan_Albatross_0003_1033.jpg"]
    assert (s.label, s.split, s.box_xyxy) == (1, "test", (5.0, 5.0, 15.0, 15.0))
    s = samples["003.Sooty_Albatross/Sooty_Albatross_0001_796366.jpg"]
    assert (s.label, s.split, s.box_xyxy) == (2, "train", (2.0, 3.0, 6.0, 8.0))
    assert [s.image_id.split("/")[0][:3] for s in index] == [index.classes.ids[s.label] for s in index]


def test_class_order_is_numeric_not_file_order(tmp_path):
    base = cub_tree(tmp_path)
    shuffled = [CUB_CLASSES[i] for i in (3, 2, 0, 1)]
    write_lines(base / "classes.txt", [f"{n} {folder}" for n, folder in shuffled])
    index = read_cub(base)
    assert index.classes.ids == ("001", "002", "003", "010")
    assert by_id(index)["010.Red_winged_Blackbird/Red_Winged_Blackbird_0005_5636.jpg"].label == 3


def test_boxes_are_optional(tmp_path):
    index = read_cub(cub_tree(tmp_path, boxes=False))
    assert len(index) == 10 and not index.has_boxes
    assert all(s.box_xyxy is None for s in index)


def test_crlf_and_missing_final_newline_read_the_same(tmp_path):
    lf = read_cub(cub_tree(tmp_path / "lf"))
    crlf = read_cub(cub_tree(tmp_path / "crlf", crlf=True))
    assert (tmp_path / "crlf" / "CUB_200_2011" / "images.txt").read_bytes().count(b"\r\n") == 9
    key = [(s.image_id, s.label, s.split, s.box_xyxy) for s in lf]
    assert [(s.image_id, s.label, s.split, s.box_xyxy) for s in crlf] == key
    assert crlf.classes == lf.classes


def test_looks_like_cub(tmp_path):
    base = cub_tree(tmp_path / "a")
    assert looks_like_cub(tmp_path / "a") and looks_like_cub(base)
    (tmp_path / "empty").mkdir()
    assert not looks_like_cub(tmp_path / "empty")


def layout_error(root: Path) -> str:
    with pytest.raises(DatasetLayoutError) as e:
        read_cub(root)
    message = str(e.value)
    assert "Expected layout" in message and "image_class_labels.txt" in message
    return message


def test_missing_annotation_file_is_named(tmp_path):
    base = cub_tree(tmp_path)
    (base / "train_test_split.txt").unlink()
    message = layout_error(tmp_path)
    assert "missing train_test_split.txt" in message and str(base / "train_test_split.txt") in message


def test_no_cub_files_at_all(tmp_path):
    (tmp_path / "photos").mkdir()
    assert "no CUB-200-2011 annotation files" in layout_error(tmp_path)


def test_unparseable_line_names_file_line_and_text(tmp_path):
    base = cub_tree(tmp_path)
    lines = (base / "images.txt").read_text().splitlines()
    lines[2] = "3"
    write_lines(base / "images.txt", lines)
    message = layout_error(base)
    assert "images.txt line 3" in message and "'3'" in message
    assert "wrong number of fields" in message and "expected <image_id> <path under images/>" in message


def test_non_numeric_box_names_the_line(tmp_path):
    base = cub_tree(tmp_path)
    lines = (base / "bounding_boxes.txt").read_text().splitlines()
    lines[4] = "5 a b c d"
    write_lines(base / "bounding_boxes.txt", lines)
    message = layout_error(base)
    assert "bounding_boxes.txt line 5" in message and "'5 a b c d'" in message and "non-numeric" in message


def test_class_not_in_classes_txt(tmp_path):
    base = cub_tree(tmp_path)
    lines = (base / "image_class_labels.txt").read_text().splitlines()
    lines[3] = "4 7"
    write_lines(base / "image_class_labels.txt", lines)
    message = layout_error(base)
    assert "image_class_labels.txt line 4" in message and "'7'" in message and "classes.txt" in message


def test_image_missing_from_split_file(tmp_path):
    base = cub_tree(tmp_path)
    lines = (base / "train_test_split.txt").read_text().splitlines()
    write_lines(base / "train_test_split.txt", lines[:-1])
    message = layout_error(base)
    assert "1 image ID(s) from images.txt have no line in" in message
    assert "train_test_split.txt: 10" in message


def test_bad_split_flag(tmp_path):
    base = cub_tree(tmp_path)
    lines = (base / "train_test_split.txt").read_text().splitlines()
    lines[0] = "1 2"
    write_lines(base / "train_test_split.txt", lines)
    message = layout_error(base)
    assert "train_test_split.txt line 1" in message and "'2' is a split flag other than 1 or 0" in message


def test_class_folder_without_id(tmp_path):
    base = cub_tree(tmp_path)
    write_lines(base / "classes.txt", ["1 Black_footed_Albatross", "2 002.Laysan_Albatross"])
    message = layout_error(base)
    assert "classes.txt" in message and "'Black_footed_Albatross' is not '<ID>.<Name>'" in message


def test_listed_image_that_does_not_exist(tmp_path):
    base = cub_tree(tmp_path)
    (base / "images" / "003.Sooty_Albatross" / "Sooty_Albatross_0003_1078.jpg").unlink()
    message = layout_error(base)
    assert "1 image(s) listed in images.txt do not exist" in message
    assert "images/003.Sooty_Albatross/Sooty_Albatross_0003_1078.jpg" in message


def test_docstring_shows_the_same_tree_as_the_errors():
    if cub.__doc__:  # None under python -OO
        assert "\n".join("    " + line for line in CUB_TREE.splitlines()) in cub.__doc__
