"""FGVC-Aircraft reader: levels, the val split, boxes, the banner, and layout errors, on a hand-checked fake."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgvc.data.formats import aircraft
from fgvc.data.formats.aircraft import AIRCRAFT_TREE, looks_like_aircraft, read_aircraft
from fgvc.data.index import DatasetLayoutError
from fgvc.errors import ConfigError
from tests.data.fakes import aircraft_tree, by_id, split_sizes, write_lines

pytestmark = pytest.mark.usefixtures("no_decoding")


@pytest.mark.parametrize("from_data_folder", [False, True])
def test_variant_level_with_val_joined_to_train(tmp_path, from_data_folder):
    data = aircraft_tree(tmp_path)
    root = data if from_data_folder else data.parent
    index = read_aircraft(root)

    assert index.format == "aircraft" and index.root == root and index.crop_bottom_px == 0
    # All of variants.txt (Tu-154 is listed, though no image uses it), in natural order: DC-9 < DC-10.
    assert index.classes.ids == ("707-320", "A300B4", "Cessna 172", "DC-9", "DC-10", "F/A-18", "Tu-154")
    assert index.classes.names == index.classes.ids
    assert split_sizes(index) == {"train": 7, "test": 4}  # the 4 train + 3 val lines, and 4 test lines

    samples = by_id(index)
    s = samples["1042658.jpg"]  # "1042658 F/A-18", box "5 3 36 28"
    assert (s.label, s.split, s.box_xyxy) == (5, "train", (4.0, 2.0, 36.0, 28.0))
    assert s.path == data / "images" / "1042658.jpg"
    s = samples["0034309.jpg"]  # "0034309 Cessna 172", box "1 1 40 30"
    assert (s.label, s.split, s.box_xyxy) == (2, "train", (0.0, 0.0, 40.0, 30.0))
    s = samples["0255555.jpg"]  # in images_variant_val.txt: "0255555 DC-10", box "1 2 3 4"
    assert (s.label, s.split, s.box_xyxy) == (4, "train", (0.0, 1.0, 3.0, 4.0))
    s = samples["0211111.jpg"]  # test: "0211111 707-320", box "11 12 13 14"
    assert (s.label, s.split, s.box_xyxy) == (0, "test", (10.0, 11.0, 13.0, 14.0))
    assert index.class_counts() == [2, 2, 2, 1, 2, 2, 0]


def test_official_val_kept_apart(tmp_path):
    index = read_aircraft(aircraft_tree(tmp_path), use_official_val=True)
    assert split_sizes(index) == {"train": 4, "val": 3, "test": 4}
    assert sorted(s.image_id for s in index.split("val")) == ["0062765.jpg", "0101542.jpg", "0255555.jpg"]
    assert by_id(index)["0101542.jpg"].label == 3  # DC-9


def test_family_level(tmp_path):
    index = read_aircraft(aircraft_tree(tmp_path), level="family")
    assert index.classes.ids == ("A300", "Boeing 707", "Cessna 172", "DC-9", "DC-10", "F/A-18", "Tu-154")
    samples = by_id(index)
    assert samples["0056978.jpg"].label == 1  # "0056978 Boeing 707": a name with a space
    assert samples["0200001.jpg"].label == 5  # "0200001 F/A-18": a name with a slash
    assert samples["0231111.jpg"].label == 0  # A300
    assert split_sizes(index) == {"train": 7, "test": 4}


def test_manufacturer_level(tmp_path):
    index = read_aircraft(aircraft_tree(tmp_path), level="manufacturer")
    assert index.classes.ids == ("Airbus", "Boeing", "Cessna", "McDonnell Douglas", "Tupolev")
    assert by_id(index)["1042658.jpg"].label == 3
    assert index.class_counts() == [2, 2, 2, 5, 0]


def test_unknown_level(tmp_path):
    with pytest.raises(ConfigError, match=r"data.options.level: 'model' .* allowed: variant\|family\|manufacturer"):
        read_aircraft(aircraft_tree(tmp_path), level="model")


def test_crop_banner_leaves_boxes_alone(tmp_path):
    data = aircraft_tree(tmp_path)
    plain, cropped = read_aircraft(data), read_aircraft(data, crop_banner=True)
    assert cropped.crop_bottom_px == 20
    assert [s.box_xyxy for s in cropped] == [s.box_xyxy for s in plain]


def test_crlf_without_final_newline(tmp_path):
    lf = read_aircraft(aircraft_tree(tmp_path / "lf"), level="family")
    data = aircraft_tree(tmp_path / "crlf", crlf=True)
    assert (data / "images_family_train.txt").read_bytes().endswith(b"0231111 A300")
    crlf = read_aircraft(data, level="family")
    assert crlf.classes == lf.classes
    assert [(s.image_id, s.label, s.split, s.box_xyxy) for s in crlf] == \
        [(s.image_id, s.label, s.split, s.box_xyxy) for s in lf]


def test_without_class_list_the_used_names_are_the_classes(tmp_path):
    data = aircraft_tree(tmp_path)
    (data / "variants.txt").unlink()
    index = read_aircraft(data)
    assert index.classes.ids == ("707-320", "A300B4", "Cessna 172", "DC-9", "DC-10", "F/A-18")


def test_boxes_are_optional(tmp_path):
    data = aircraft_tree(tmp_path, boxes=False)
    index = read_aircraft(data)
    assert len(index) == 11 and not index.has_boxes


def test_trainval_and_other_levels_are_not_needed(tmp_path):
    data = aircraft_tree(tmp_path)
    (data / "images_variant_trainval.txt").write_text("not even parseable\n")
    for name in ("families.txt", "manufacturers.txt", "images_family_test.txt", "images_manufacturer_train.txt"):
        (data / name).unlink()
    assert len(read_aircraft(data)) == 11


def test_looks_like_aircraft(tmp_path):
    data = aircraft_tree(tmp_path / "a")
    assert looks_like_aircraft(data.parent) and looks_like_aircraft(data)
    (tmp_path / "empty").mkdir()
    assert not looks_like_aircraft(tmp_path / "empty")


def layout_error(root: Path, **options) -> str:
    with pytest.raises(DatasetLayoutError) as e:
        read_aircraft(root, **options)
    message = str(e.value)
    assert "Expected layout" in message and "images_variant_train.txt" in message
    return message


def test_missing_split_file_is_named(tmp_path):
    data = aircraft_tree(tmp_path)
    (data / "images_family_test.txt").unlink()
    message = layout_error(data.parent, level="family")
    assert "missing images_family_test.txt" in message and str(data / "images_family_test.txt") in message


def test_no_aircraft_files_at_all(tmp_path):
    (tmp_path / "data").mkdir()
    assert "no FGVC-Aircraft annotation files" in layout_error(tmp_path)


def test_class_not_in_list_file(tmp_path):
    data = aircraft_tree(tmp_path)
    lines = (data / "images_variant_train.txt").read_text().splitlines()
    lines[1] = "1042658 F-18"
    write_lines(data / "images_variant_train.txt", lines)
    message = layout_error(data)
    assert "images_variant_train.txt line 2: class 'F-18' is not in variants.txt" in message


def test_unparseable_line(tmp_path):
    data = aircraft_tree(tmp_path)
    write_lines(data / "images_variant_val.txt", ["0062765 A300B4", "", "0101542"])
    message = layout_error(data)
    assert "images_variant_val.txt line 3: cannot parse '0101542'" in message


def test_image_in_two_splits(tmp_path):
    data = aircraft_tree(tmp_path)
    with (data / "images_variant_test.txt").open("a") as f:
        f.write("0034309 Cessna 172\n")
    message = layout_error(data)
    assert "images_variant_test.txt line 5: image 0034309 is already listed in images_variant_train.txt" in message


def test_bad_and_missing_boxes(tmp_path):
    data = aircraft_tree(tmp_path)
    lines = (data / "images_box.txt").read_text().splitlines()
    write_lines(data / "images_box.txt", lines[:-1])
    assert "1 listed image(s) have no box in images_box.txt: 0211111" in layout_error(data)
    write_lines(data / "images_box.txt", ["0034309 1 1 40"] + lines[1:])
    assert "images_box.txt line 1: cannot parse '0034309 1 1 40'" in layout_error(data)


def test_listed_image_that_does_not_exist(tmp_path):
    data = aircraft_tree(tmp_path)
    (data / "images" / "0145890.jpg").unlink()
    message = layout_error(data)
    assert "1 listed image(s) do not exist, e.g. images/0145890.jpg" in message


def test_docstring_shows_the_same_tree_as_the_errors():
    if aircraft.__doc__:  # None under python -OO
        assert "\n".join("    " + line for line in AIRCRAFT_TREE.splitlines()) in aircraft.__doc__
