"""The acceptance test of the data layer: a messy competition folder, every problem found by path."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from fgvc.data.check import check_dataset, problems_for_training
from fgvc.data.dataset import FGVCDataset, collate_skipping
from fgvc.data.decode import ImageDecodeError
from fgvc.data.formats import read_dataset
from tests.data.fixtures import competition_tree, exif_rotated_jpeg, sixteen_bit_png
from tests.imaging import write_image


@pytest.fixture
def messy(tmp_path):
    root = competition_tree(tmp_path / "messy", {"04615_Black_Albatross": 3, "04780_Sooty_Albatross": 2}, test=2)
    a, b = root / "train" / "04615_Black_Albatross", root / "train" / "04780_Sooty_Albatross"
    good = (a / "img0.jpg").read_bytes()
    paths = {
        "corrupt": a / "corrupt.jpg",
        "garbage": b / "garbage.png",
        "truncated": a / "truncated.jpg",
        "zero": b / "zero.jpg",
        "text": b / "notes.txt",
        "cmyk": b / "cmyk.jpg",
        "rgba": b / "rgba.png",
        "16bit": sixteen_bit_png(a / "deep.png"),
        "exif": exif_rotated_jpeg(a / "rotated.jpg"),
        "empty_class": root / "train" / "04700_Empty",
        "bad_name": root / "train" / "Albatross_without_id",
        "dup": root / "test" / "copy_of_img1.jpg",
    }
    paths["corrupt"].write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 4)
    paths["garbage"].write_bytes(b"GIF? no, just bytes" * 8)
    paths["truncated"].write_bytes(good[: len(good) // 2])
    paths["zero"].write_bytes(b"")
    paths["text"].write_text("photographer notes")
    write_image(paths["cmyk"], seed=11, mode="CMYK")
    write_image(paths["rgba"], seed=12, mode="RGBA")
    paths["empty_class"].mkdir()
    write_image(paths["bad_name"] / "x.jpg", seed=13)
    shutil.copy(a / "img1.jpg", paths["dup"])
    (root / "train" / ".DS_Store").write_bytes(b"\0\0")
    (a / "._img0.jpg").write_bytes(b"\0")
    (root / "test" / "Thumbs.db").write_bytes(b"\0")
    return root, paths


def _by_kind(report):
    out = {}
    for p in report.problems:
        out.setdefault(p.kind, []).append(p)
    return out


def test_every_problem_is_reported_with_its_path(messy):
    root, paths = messy
    report = check_dataset(root)
    kinds = _by_kind(report)
    assert [p.path for p in kinds["not-an-image"]] == [paths["text"]]
    assert [p.path for p in kinds["unidentified-image"]] == [paths["garbage"]]
    # a JPEG header followed by junk reads as truncated too
    assert {p.path for p in kinds["truncated"]} == {paths["corrupt"], paths["truncated"]}
    assert [p.path for p in kinds["empty-file"]] == [paths["zero"]]
    assert [p.path for p in kinds["empty-class"]] == [paths["empty_class"]]
    assert [p.path for p in kinds["bad-folder-name"]] == [paths["bad_name"]]
    [dup] = kinds["duplicate-across-splits"]
    assert dup.path == paths["dup"] and "img1.jpg" in dup.message
    assert report.ignored["hidden"] == 3
    assert report.conversions == {"CMYK": 1, "RGBA": 1, "16-bit": 1, "EXIF-rotated": 1}
    assert not report.ok
    assert report.format == "competition"
    assert report.class_ids == ["04615", "04780"]
    # usable: 3 good + 16-bit + rotated in 04615; 2 good + cmyk + rgba in 04780
    assert report.images_per_class == {"04615": 5, "04780": 4}
    text = report.to_text()
    assert str(paths["truncated"]) in text and "NOT usable" in text
    # 13 train files listed, 4 of them cannot be decoded; the classes hold the 9 readable ones
    assert report.split_counts == {"train": 13, "test": 3} and report.unreadable == {"train": 4}
    assert "images:   train 13 (4 unreadable), test 3\n" in text
    assert "per class (train, readable): min 4, median 4.5, max 5\n" in text
    assert f"  1 rotated (or flipped) as their EXIF orientation tag says: {paths['exif']}\n" in text
    assert f"  1 CMYK to RGB: {paths['cmyk']}\n" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["usable"] is False and data["num_classes"] == 2
    assert data["unreadable_per_split"] == {"train": 4, "test": 0}
    assert data["converted_to_rgb"] == {"CMYK": 1, "RGBA": 1, "16-bit": 1}
    assert data["converted_at_load"]["EXIF-rotated"] == {"count": 1, "examples": [str(paths["exif"])]}


def test_usable_images_load_as_three_channel_tensors(messy):
    root, paths = messy
    index = read_dataset(root).split("train")
    broken = {paths["corrupt"], paths["garbage"], paths["truncated"], paths["zero"]}
    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    dataset = FGVCDataset(index, transform=transform, skip_unreadable=True)
    loaded = {}
    for i, s in enumerate(index.samples):
        item = dataset[i]
        assert (item is None) == (s.path in broken)
        if item is not None:
            assert item["image"].shape[0] == 3 and item["image"].dtype == torch.float32
            loaded[s.path.name] = item
    assert len(loaded) == len(index) - len(broken) - 2  # img0/img1 appear in both classes
    # EXIF orientation applied: the 40x30 landscape file is shown as 30 wide, 40 tall
    assert tuple(loaded["rotated.jpg"]["image"].shape) == (3, 40, 30)
    assert loaded["rotated.jpg"]["orig_size"].tolist() == [40, 30]
    # 16-bit ramp scaled to 8 bits, not clipped: last column white, middle column mid-grey
    deep = loaded["deep.png"]["image"]
    assert deep[:, :, -1].min() == 1.0 and deep[:, :, 0].max() == 0.0
    assert deep[0, 0, 20].item() == pytest.approx(round(65535 * 20 / 39 / 257) / 255, abs=1 / 255)
    good = [i for i, s in enumerate(index.samples) if s.path.name.startswith("img")][:2]
    batch = collate_skipping([dataset[good[0]], None, dataset[good[1]]])
    assert batch["skipped"] == 1 and batch["image"].shape[0] == 2
    assert batch["label"].tolist() == [index.samples[g].label for g in good]


def test_unreadable_image_without_skip_names_the_file(messy):
    root, paths = messy
    index = read_dataset(root).split("train")
    dataset = FGVCDataset(index)
    i = next(i for i, s in enumerate(index.samples) if s.path == paths["truncated"])
    with pytest.raises(ImageDecodeError) as e:
        dataset[i]
    assert str(paths["truncated"]) in str(e.value)


def test_clean_data_is_usable_and_small_images_warn(tmp_path):
    root = competition_tree(tmp_path, {"04615_A": 2, "04620_B": 2}, test=1, size=(40, 32))
    report = check_dataset(root, min_side=33)
    assert report.ok
    assert [p.kind for p in report.problems] == ["too-small"] * 5
    assert report.sizes == {"width": [40, 40, 40], "height": [32, 32, 32]}
    assert check_dataset(root).problems == []


def test_decompression_bomb_is_a_message_not_a_crash(tmp_path, monkeypatch):
    root = competition_tree(tmp_path, {"04615_A": 1, "04620_B": 1})
    write_image(root / "train" / "04615_A" / "huge.png", size=(80, 80))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 40x30 = 1200 px pass, 80x80 = 6400 px do not
    report = check_dataset(root)
    [bomb] = [p for p in report.problems if p.kind == "decompression-bomb"]
    assert bomb.path.name == "huge.png" and "MAX_IMAGE_PIXELS" in bomb.message
    assert np.isclose(Image.MAX_IMAGE_PIXELS, 3000)


def test_exif_rotated_images_are_counted_with_the_first_paths(tmp_path):
    root = competition_tree(tmp_path, {"04615_A": 2, "04620_B": 2}, size=(40, 40))
    rotated = [exif_rotated_jpeg(root / "train" / "04615_A" / f"r{i}.jpg") for i in range(5)]
    upright = exif_rotated_jpeg(root / "train" / "04620_B" / "upright.jpg")
    with Image.open(upright) as img:  # the same kind of file, but with orientation 1 (as stored)
        exif = img.getexif()
        exif[0x0112] = 1
        img.save(upright, exif=exif)
    report = check_dataset(root, min_side=1)
    assert report.ok and report.conversions == {"EXIF-rotated": 5}
    assert report.conversion_examples["EXIF-rotated"] == rotated[:3]
    shown = ", ".join(str(p) for p in rotated[:3])
    assert f"  5 rotated (or flipped) as their EXIF orientation tag says: {shown} (+2 more)\n" in report.to_text()
    assert "unreadable" not in report.to_text()


def test_totals_say_how_many_listed_images_are_unreadable(tmp_path):
    root = competition_tree(tmp_path, {"04615_A": 3, "04620_B": 2}, test=2, size=(40, 40))
    good = (root / "train" / "04615_A" / "img0.jpg").read_bytes()
    (root / "train" / "04615_A" / "cut.jpg").write_bytes(good[: len(good) // 2])
    (root / "train" / "04620_B" / "empty.jpg").write_bytes(b"")
    (root / "test" / "empty.jpg").write_bytes(b"")
    report = check_dataset(root)
    assert report.split_counts == {"train": 7, "test": 3}
    assert report.unreadable == {"train": 2, "test": 1}
    assert sum(report.images_per_class.values()) == 7 - 2  # classes hold the readable images only
    text = report.to_text()
    assert "images:   train 7 (2 unreadable), test 3 (1 unreadable)\n" in text
    assert "per class (train, readable): min 2, median 2.5, max 3\n" in text


def test_problems_for_training_lists_layout_and_image_errors_together(tmp_path):
    root = competition_tree(tmp_path, {"04615_A": 2, "04620_B": 2}, size=(40, 40))
    good = (root / "train" / "04615_A" / "img0.jpg").read_bytes()
    truncated = root / "train" / "04615_A" / "cut.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    write_image(root / "train" / "no_id_here" / "x.jpg", seed=3)  # a folder the reader refuses
    read_errors = [p for p in read_dataset(root).problems if p.severity == "error"]
    assert [p.kind for p in read_errors] == ["bad-folder-name"]  # what reading the layout alone finds

    lines = problems_for_training(root, "competition", {})
    assert len(lines) == 2
    assert lines[0].startswith(f"[error] bad-folder-name: {root / 'train' / 'no_id_here'}: ")
    assert lines[1].startswith(f"[error] truncated: {truncated}: cannot decode image")
    assert problems_for_training(root) == problems_for_training(root, "auto") == lines  # detected


def test_problems_for_training_of_a_clean_folder_is_empty_and_warnings_are_left_out(tmp_path):
    root = competition_tree(tmp_path, {"04615_A": 1, "04620_B": 1}, size=(20, 20))  # too small: a warning
    assert problems_for_training(root, None, None) == []
    assert problems_for_training(tmp_path / "nope") == [
        f"[error] layout: {tmp_path / 'nope'}: data folder not found (the path does not exist)"]
