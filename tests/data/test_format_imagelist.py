"""Image-list reader (MMAL-Net's Cars and Aircraft layouts) on small hand-checked trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgvc.data.check import check_dataset
from fgvc.data.formats import detect_format, imagelist, read_dataset
from fgvc.data.formats.imagelist import IMAGELIST_TREE, looks_like_imagelist, read_imagelist
from fgvc.data.index import DatasetLayoutError
from tests.data.fakes import by_id, cub_tree, split_sizes, write_lines
from tests.data.fixtures import competition_tree
from tests.imaging import write_image

# MMAL-Net's Stanford Cars: bare file names, joined to cars_train/ or cars_test/; the two folders
# reuse file names. Labels 1-based, as in the real train.txt ("00001.jpg 14").
CARS_TRAIN = [("00001.jpg", "3"), ("00002.jpg", "1"), ("00003.jpg", "3"), ("00004.jpg", "2"), ("00005.jpg", "1")]
CARS_TEST = [("00001.jpg", "2"), ("00002.jpg", "3"), ("00003.jpg", "1")]
# MMAL-Net's FGVC-Aircraft: lists in data/, file names joined to data/images/; here 0-based, zero-padded.
AIRCRAFT_TRAIN = [("1025794.jpg", "01"), ("1340192.jpg", "00"), ("0056978.jpg", "02"), ("0698580.jpg", "00")]
AIRCRAFT_TEST = [("0450014.jpg", "02"), ("1042824.jpg", "01")]


def cars_lists(root: Path, *, prefix: bool = False, size=(40, 30)) -> Path:
    """``prefix`` writes the paths relative to ROOT ("cars_train/00001.jpg") instead of bare names."""
    for split, rows in (("train", CARS_TRAIN), ("test", CARS_TEST)):
        folder = f"cars_{split}/" if prefix else ""
        write_lines(root / f"{split}.txt", [f"{folder}{name} {label}" for name, label in rows])
        for n, (name, _) in enumerate(rows):
            write_image(root / f"cars_{split}" / name, size=size, seed=n + (100 if split == "test" else 0))
    return root


def aircraft_lists(root: Path) -> Path:
    data = root / "data"
    for split, rows in (("train", AIRCRAFT_TRAIN), ("test", AIRCRAFT_TEST)):
        write_lines(data / f"{split}.txt", [f"{name} {label}" for name, label in rows])
        for n, (name, _) in enumerate(rows):
            write_image(data / "images" / name, seed=n)
    return root


def errors(index):
    return [(p.kind, p.path.name, p.message) for p in index.problems if p.severity == "error"]


@pytest.mark.usefixtures("no_decoding")
def test_cars_one_based_labels_in_split_folders(tmp_path):
    root = cars_lists(tmp_path)
    index = read_imagelist(root)
    assert index.format == "imagelist" and index.root == root
    assert index.classes.ids == ("1", "2", "3") and index.classes.names == ("1", "2", "3")
    assert split_sizes(index) == {"train": 5, "test": 3}
    train, test = index.split("train"), index.split("test")
    assert [s.label for s in train] == [2, 0, 2, 1, 0]  # labels 3 1 3 2 1, minus one
    assert [s.label for s in test] == [1, 2, 0]
    assert [s.image_id for s in test] == ["cars_test/00001.jpg", "cars_test/00002.jpg", "cars_test/00003.jpg"]
    assert train.samples[0].path == root / "cars_train" / "00001.jpg"
    assert test.samples[0].path == root / "cars_test" / "00001.jpg"  # same name, the other folder
    assert [(p.kind, p.severity, p.path, p.message) for p in index.problems] == [
        ("label-numbering", "info", root / "train.txt",
         "labels in train.txt and test.txt are 1-based: class 1 is index 0")
    ]


@pytest.mark.usefixtures("no_decoding")
def test_paths_relative_to_root_read_the_same(tmp_path):
    bare = read_imagelist(cars_lists(tmp_path / "bare"))
    prefixed = read_imagelist(cars_lists(tmp_path / "prefixed", prefix=True))
    assert [(s.image_id, s.label, s.split) for s in prefixed] == [(s.image_id, s.label, s.split) for s in bare]


@pytest.mark.parametrize("from_data_folder", [False, True])
@pytest.mark.usefixtures("no_decoding")
def test_aircraft_zero_based_labels_kept_as_spelled(tmp_path, from_data_folder):
    root = aircraft_lists(tmp_path)
    root = root / "data" if from_data_folder else root
    index = read_dataset(root)
    assert index.format == "imagelist"
    assert index.classes.ids == ("00", "01", "02")  # as written, never re-padded
    assert split_sizes(index) == {"train": 4, "test": 2}
    samples = by_id(index)
    prefix = "images/" if from_data_folder else "data/images/"
    assert samples[prefix + "1025794.jpg"].label == 1
    assert samples[prefix + "0450014.jpg"].label == 2 and samples[prefix + "0450014.jpg"].split == "test"
    (note,) = index.problems
    assert note.severity == "info" and note.message == (
        "labels in train.txt and test.txt are 0-based: class 00 is index 0")


@pytest.mark.usefixtures("no_decoding")
def test_class_names_from_classes_txt_and_an_optional_val_list(tmp_path):
    root = cars_lists(tmp_path)
    write_lines(root / "classes.txt", ["1 AM General Hummer SUV 2000", "2 Acura RL Sedan 2012",
                                       "3 Acura TL Sedan 2012"])
    write_lines(root / "val.txt", ["cars_train/00005.jpg 1"])  # relative to ROOT, in the train folder
    write_lines(root / "train.txt", [f"{n} {label}" for n, label in CARS_TRAIN[:4]])
    index = read_imagelist(root)
    assert index.classes.names == ("AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012")
    assert split_sizes(index) == {"train": 4, "val": 1, "test": 3}
    assert index.split("val").samples[0].label == 0
    assert index.problems[0].message == "labels in train.txt and val.txt and test.txt are 1-based: class 1 is index 0"


@pytest.mark.usefixtures("no_decoding")
def test_bad_lines_missing_images_and_test_only_labels_are_errors_naming_file_and_line(tmp_path):
    root = cars_lists(tmp_path)
    write_lines(root / "train.txt", ["00001.jpg 3", "00002.jpg", "", "00003.jpg three", "00004.jpg 2", "00005.jpg 1",
                                     "00001.jpg 3"])
    write_lines(root / "test.txt", ["00001.jpg 2", "00002.jpg 7", "00003.jpg 01", "00009.jpg 1", "00002.jpg 7"])
    write_image(root / "cars_test" / "00009.jpg")
    (root / "cars_train" / "00004.jpg").unlink()
    index = read_imagelist(root)
    assert errors(index) == [
        ("bad-line", "train.txt", "line 2: expected '<relative path> <integer label>', got '00002.jpg'; skipped"),
        ("bad-line", "train.txt", "line 4: expected '<relative path> <integer label>', got '00003.jpg three'; "
                                  "skipped"),
        ("missing-image", "train.txt", "line 5: image cars_train/00004.jpg does not exist"),
        ("duplicate-image", "train.txt", "line 7: image cars_train/00001.jpg is already listed on train.txt line 1; "
                                         "skipped"),
        ("duplicate-image", "test.txt", "line 5: image cars_test/00002.jpg is already listed on test.txt line 2; "
                                        "skipped"),
        ("respelled-label", "test.txt", "line 3: label 01 is the number written 1 on train.txt line 6; write each "
                                        "label one way; skipped"),
        # label 2 labelled only the missing train image, so test.txt's "00001.jpg 2" has no class either
        ("unknown-class", "test.txt", "line 1: label 2 is not in train.txt, so no model trained here can predict "
                                      "it; 1 line(s) skipped: 1"),
        ("unknown-class", "test.txt", "line 2: label 7 is not in train.txt, so no model trained here can predict "
                                      "it; 1 line(s) skipped: 2"),
    ]
    assert index.classes.ids == ("1", "3")  # 2 only labelled a missing image
    assert [(s.image_id, s.label) for s in index] == [
        ("cars_train/00001.jpg", 1), ("cars_train/00005.jpg", 0), ("cars_test/00009.jpg", 0)]


@pytest.mark.usefixtures("no_decoding")
def test_a_gap_in_the_train_labels_is_a_warning(tmp_path):
    root = cars_lists(tmp_path)
    write_lines(root / "train.txt", ["00001.jpg 1", "00002.jpg 4", "00003.jpg 6"])
    write_lines(root / "test.txt", ["00001.jpg 4"])
    index = read_imagelist(root)
    assert index.classes.ids == ("1", "4", "6") and [s.label for s in index] == [0, 1, 2, 1]
    (gap,) = [p for p in index.problems if p.severity == "warning"]
    assert gap.message == ("no train image has label(s) 2, 3, 5 (between 1 and 6); class indices follow the labels "
                           "present, so from label 3 on a label's index is not label - 1")


@pytest.mark.usefixtures("no_decoding")
def test_a_list_whose_images_are_all_elsewhere_is_a_layout_error(tmp_path):
    root = cars_lists(tmp_path)
    (root / "cars_test").rename(root / "cars_tst")
    with pytest.raises(DatasetLayoutError) as e:
        read_imagelist(root)
    message = str(e.value)
    assert ("3 image(s) listed in test.txt (looked in ROOT) do not exist, e.g. 00001.jpg, 00002.jpg, "
            "00003.jpg") in message
    assert "Expected layout" in message and "cars_train/00001.jpg" in message

    (root / "cars_tst").rename(root / "cars_test")  # the MMAL-Net folder is there, the names are not
    for image in (root / "cars_test").iterdir():
        image.rename(image.with_name("x" + image.name))
    with pytest.raises(DatasetLayoutError, match=r"3 image\(s\) listed in test.txt \(looked in cars_test/\) do not "
                                                 r"exist, e.g. cars_test/00001.jpg"):
        read_imagelist(root)


@pytest.mark.usefixtures("no_decoding")
def test_without_train_list_or_train_lines(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match="no train.txt in"):
        read_imagelist(tmp_path / "empty")
    root = cars_lists(tmp_path / "bad")
    write_lines(root / "train.txt", ["just words here"])
    with pytest.raises(DatasetLayoutError, match="train.txt lists no images as '<relative path> <integer label>'"):
        read_imagelist(root)


def test_detection_of_both_layouts_and_of_nothing_else(tmp_path):
    assert detect_format(cars_lists(tmp_path / "cars")) == "imagelist"
    assert detect_format(aircraft_lists(tmp_path / "aircraft")) == "imagelist"
    assert detect_format(tmp_path / "aircraft" / "data") == "imagelist"

    cub = cub_tree(tmp_path / "cub")  # images.txt "1 001.Black_footed_Albatross/...": no train.txt
    assert not looks_like_imagelist(cub) and detect_format(cub) == "cub"
    competition = competition_tree(tmp_path / "competition", {"04615_a": 1}, test=1)
    (competition / "test_labels.csv").write_text("file,class_id\nt000.jpg,04615\n")
    assert not looks_like_imagelist(competition) and detect_format(competition) == "competition"
    write_lines(competition / "train.txt", ["notes about the training run"])
    write_lines(competition / "test.txt", ["t000.jpg 04615"])
    assert detect_format(competition) == "competition"  # train.txt is not a list of images

    lists = tmp_path / "lists"
    write_lines(lists / "train.txt", ["1 001.Black_footed_Albatross/a.jpg"])  # <int> <path>: not a list
    write_lines(lists / "test.txt", ["a.jpg 1"])
    assert not looks_like_imagelist(lists)
    (lists / "train.txt").write_bytes(b"\xef\xbb\xbf\r\n\r\nimages/a.jpg 1\r\n")  # BOM, blank lines, CRLF
    assert looks_like_imagelist(lists)
    (lists / "test.txt").unlink()
    assert not looks_like_imagelist(lists)  # both lists or none


def test_check_report_states_the_label_numbering_as_a_note(tmp_path):
    report = check_dataset(cars_lists(tmp_path, size=(40, 40)))
    assert report.ok and report.format == "imagelist" and not report.warnings
    assert [p.kind for p in report.notes] == ["label-numbering"]
    text = report.to_text()
    assert "problems: 0 error(s), 0 warning(s)\nnotes:\n  [info] label-numbering: " in text
    assert text.endswith("labels in train.txt and test.txt are 1-based: class 1 is index 0\nresult:   usable")


def test_docstring_shows_the_same_tree_as_the_errors():
    if imagelist.__doc__:  # None under python -OO
        assert "\n".join("    " + line for line in IMAGELIST_TREE.splitlines()) in imagelist.__doc__
