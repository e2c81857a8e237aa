import pytest

from fgvc.data.check import check_dataset
from fgvc.data.formats import detect_format
from fgvc.data.formats.competition import parse_class_folder, read_competition
from fgvc.data.index import DatasetLayoutError
from tests.data.fixtures import competition_tree


def test_folder_name_parsing_keeps_the_id_as_spelled():
    assert parse_class_folder("04780_Sooty_Albatross") == ("04780", "Sooty Albatross")
    assert parse_class_folder("Sooty_Albatross") is None
    assert parse_class_folder("04780") is None


def test_reads_classes_labels_and_test_files(tmp_path):
    root = competition_tree(tmp_path, {"04780_Sooty_Albatross": 2, "04615_Black_footed_Albatross": 3}, test=4)
    index = read_competition(root)
    assert index.format == "competition"
    assert index.classes.ids == ("04615", "04780")
    assert index.classes.names == ("Black footed Albatross", "Sooty Albatross")
    train = index.split("train")
    assert len(train) == 5
    assert [s.label for s in train] == [0, 0, 0, 1, 1]
    assert train.samples[3].image_id == "04780_Sooty_Albatross/img0.jpg"
    test = index.split("test")
    assert [s.image_id for s in test] == ["t000.jpg", "t001.jpg", "t002.jpg", "t003.jpg"]
    assert all(s.label is None for s in test)
    assert not index.problems
    assert detect_format(root) == "competition"


def test_test_labels_boxes_and_unknown_classes(tmp_path):
    root = competition_tree(tmp_path, {"04615_A": 1, "04620_B": 1}, test=3)
    (root / "test_labels.csv").write_text("file,class_id\nt000.jpg,04620\nt001.jpg,04615\nt002.jpg,09999\n")
    (root / "bounding_boxes.csv").write_text("file,x,y,width,height\ntrain/04615_A/img0.jpg,1,2,10,20\n"
                                             "test/t000.jpg,0.5,0,4,4\n")
    index = read_competition(root)
    test = index.split("test")
    assert [s.label for s in test] == [1, 0, None]
    assert index.split("train").samples[0].box_xyxy == (1.0, 2.0, 11.0, 22.0)
    assert test.samples[0].box_xyxy == (0.5, 0.0, 4.5, 4.0)
    unknown = [p for p in index.problems if p.kind == "unknown-class"]
    assert len(unknown) == 1 and unknown[0].path.name == "t002.jpg" and "09999" in unknown[0].message


def test_class_list_file_pins_order_and_must_match(tmp_path):
    root = competition_tree(tmp_path, {"04615_A": 1, "04620_B": 1})
    (root / "class_labels.txt").write_text("0 04620\n1 04615")  # no final newline
    assert read_competition(root).classes.ids == ("04620", "04615")
    (root / "class_labels.txt").write_text("0 4620\n1 04615\n")  # re-padded ID: not as the folder spells it
    with pytest.raises(DatasetLayoutError) as e:
        read_competition(root)
    msg = str(e.value)
    assert "class_labels.txt does not match" in msg and "04620" in msg and "4620" in msg


def test_colliding_ids_are_one_concise_problem_naming_both_folders(tmp_path):
    root = competition_tree(tmp_path, {"04615_a": 2, "4615_b": 1, "04700_c": 1})
    index = read_competition(root)
    assert index.classes.ids == ("04615", "04700")  # 4615_b is left out, the rest is read
    assert len(index.split("train")) == 3
    (problem,) = index.problems
    assert (problem.kind, problem.severity, problem.path) == ("duplicate-class-id", "error", root / "train" / "4615_b")
    assert problem.message == ("class ID 4615 is the same number as 04615 (folder 04615_a); rename one folder "
                               "so that every class has a distinct ID; folder skipped")

    report = check_dataset(root)
    text = report.to_text()
    assert report.format == "competition" and not report.ok
    assert "Expected layout" not in text and "format:   unknown" not in text
    assert text.count("duplicate-class-id") == 1


def test_duplicate_row_in_test_labels_is_an_error_naming_file_line_and_name(tmp_path):
    root = competition_tree(tmp_path, {"04615_A": 1, "04620_B": 1}, test=2)
    labels = root / "test_labels.csv"
    labels.write_text("file,class_id\nt000.jpg,04620\nt001.jpg,04615\nt000.jpg,04615\n")
    index = read_competition(root)
    (problem,) = [p for p in index.problems if p.severity == "error"]
    assert (problem.kind, problem.path) == ("bad-labels-file", labels)
    assert problem.message == ("line 4: file 't000.jpg' is already labelled on line 2; each test file needs "
                               "exactly one label; test images left unlabelled")
    assert [s.label for s in index.split("test")] == [None, None]  # never the second row's 04615




def test_a_refused_layout_reports_the_detected_format_not_unknown(tmp_path):
    root = competition_tree(tmp_path, {"04615_A": 1, "04620_B": 1})
    (root / "class_labels.txt").write_text("0 04615\n")  # lacks 04620
    report = check_dataset(root)
    assert report.format == "competition" and not report.ok
    (problem,) = report.problems
    assert problem.kind == "layout" and "class_labels.txt does not match the train/ folders" in problem.message
