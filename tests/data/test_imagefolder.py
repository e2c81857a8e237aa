import pytest

from fgvc.data.formats import detect_format
from fgvc.data.formats.imagefolder import read_imagefolder
from fgvc.data.index import DatasetLayoutError
from tests.imaging import write_image


def test_flat_class_folders_are_one_train_split(tmp_path):
    for cls, n in {"sparrow": 2, "Blue_Jay": 1, "robin": 1}.items():
        for i in range(n):
            write_image(tmp_path / cls / f"{i}.png", seed=i)
    (tmp_path / "robin" / ".DS_Store").write_bytes(b"\0")
    index = read_imagefolder(tmp_path)
    assert index.classes.ids == ("Blue_Jay", "robin", "sparrow")
    assert index.classes.names == ("Blue Jay", "robin", "sparrow")
    assert index.splits == ["train"]
    assert [s.label for s in index] == [0, 1, 2, 2]
    assert index.ignored["hidden"] == 1
    assert detect_format(tmp_path) == "imagefolder"


def test_split_folders_and_classes_train_lacks(tmp_path):
    write_image(tmp_path / "train" / "a" / "0.jpg")
    write_image(tmp_path / "train" / "b" / "0.jpg", seed=1)
    write_image(tmp_path / "val" / "b" / "0.jpg", seed=2)
    write_image(tmp_path / "test" / "a" / "0.jpg", seed=3)
    write_image(tmp_path / "test" / "c" / "0.jpg", seed=4)
    index = read_imagefolder(tmp_path)
    assert index.splits == ["train", "val", "test"]
    assert [(s.split, s.label, s.image_id) for s in index.split("val", "test")] == [
        ("val", 1, "b/0.jpg"), ("test", 0, "a/0.jpg")]
    [unknown] = [p for p in index.problems if p.kind == "unknown-class"]
    assert unknown.path == tmp_path / "test" / "c" and unknown.severity == "error"
    assert detect_format(tmp_path) == "imagefolder"  # test/ has class folders: not the competition layout


def test_empty_root_and_split_without_images_show_the_tree(tmp_path):
    with pytest.raises(DatasetLayoutError, match="Expected layout"):
        read_imagefolder(tmp_path)
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError) as e:
        read_imagefolder(tmp_path)
    assert "no class folder with images found under train/" in str(e.value)


def test_two_spellings_of_one_class_number_are_one_problem_not_a_failure(tmp_path):
    write_image(tmp_path / "train" / "01" / "0.jpg")
    write_image(tmp_path / "train" / "1" / "0.jpg", seed=1)
    write_image(tmp_path / "train" / "2" / "0.jpg", seed=2)
    write_image(tmp_path / "test" / "1" / "0.jpg", seed=3)
    index = read_imagefolder(tmp_path)
    assert index.classes.ids == ("01", "2")
    assert [(s.split, s.label) for s in index] == [("train", 0), ("train", 1)]
    assert [(p.kind, p.severity, p.path, p.message) for p in index.problems] == [
        ("duplicate-class-id", "error", tmp_path / "train" / "1",
         "class folder 1 is the same number as folder 01; rename one so that every class has a distinct ID; "
         "folder skipped")]
