import pytest

from fgvc.data.formats import detect_format, read_dataset
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


def test_colliding_ids_name_both_folders(tmp_path):
    root = competition_tree(tmp_path, {"04615_a": 1, "4615_b": 1})
    with pytest.raises(DatasetLayoutError) as e:
        read_competition(root)
    assert "04615_a" in str(e.value) and "4615_b" in str(e.value)


def test_missing_train_folder_shows_the_expected_tree(tmp_path):
    (tmp_path / "test").mkdir()
    with pytest.raises(DatasetLayoutError) as e:
        read_competition(tmp_path)
    msg = str(e.value)
    assert "no train/ folder" in msg and "Expected layout" in msg and "<classID>_<className>" in msg
    assert "test/" in msg  # what was found instead


def test_train_without_class_folders_is_an_error(tmp_path):
    (tmp_path / "train" / "Sooty_Albatross").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="no usable <classID>_<className> folders"):
        read_competition(tmp_path)


def test_unknown_format_name_suggests_the_closest(tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'competition'"):
        read_dataset(tmp_path, "competiton")


def test_detection_of_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetLayoutError, match="data folder not found"):
        detect_format(tmp_path / "nope")
