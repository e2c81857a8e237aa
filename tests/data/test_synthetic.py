"""The synthetic bird generator: documented layouts, true boxes, determinism, and local class differences."""

from __future__ import annotations

import csv
import hashlib
import re
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fgvc.data import synthetic
from fgvc.data.synthetic import (
    ATTRIBUTE_LEVELS,
    MAX_CLASSES,
    PLAIN_BACKGROUND,
    BirdAttributes,
    FolderNotEmptyError,
    choose_class_attributes,
    generate_dataset,
    render_bird,
)
from fgvc.errors import ConfigError

SMALL = {"num_classes": 4, "per_class": 5, "size": 64, "seed": 3}  # 1 test image per class at 0.2
BASE_BIRD = BirdAttributes(crown_colour="red", crown_shape="cap", wing_bars=2, tail="striped", beak="orange")
# A part change may repaint at most this share of the object's box: the classes differ locally.
MAX_LOCAL_DIFFERENCE = 0.15


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def read_table(path: Path) -> list[list[str]]:
    return [line.split(" ") for line in path.read_text(encoding="utf-8").splitlines()]


def assert_image(path: Path, size: int, box: tuple[float, ...]) -> None:
    """The file exists, decodes at the requested size, and its box lies inside it."""
    with Image.open(path) as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (size, size))
        img.load()
    x, y, w, h = box
    assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= size and y + h <= size


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------
# Layouts


def test_competition_layout(tmp_path: Path) -> None:
    root = tmp_path / "comp"
    summary = generate_dataset(root, layout="competition", **SMALL)
    assert (summary.root, summary.layout, summary.num_classes) == (root, "competition", 4)
    assert (summary.train_images, summary.test_images) == (16, 4)

    ids = summary.class_ids
    assert all(re.fullmatch(r"0\d{4}", i) for i in ids), ids  # zero-padded, leading zero kept
    gaps = np.diff([int(i) for i in ids])
    assert ids[0] == "04615" and all(1 <= g <= 4 for g in gaps) and any(g > 1 for g in gaps)
    assert len(set(summary.class_names)) == 4
    assert all(re.fullmatch(r"[A-Z][a-z]+_[A-Z][a-z]+", n) for n in summary.class_names)

    folders = sorted(p.name for p in (root / "train").iterdir())
    assert folders == sorted(f"{i}_{n}" for i, n in zip(ids, summary.class_names, strict=True))
    for class_id, name in zip(ids, summary.class_names, strict=True):
        files = sorted(p.name for p in (root / "train" / f"{class_id}_{name}").iterdir())
        assert files == [f"{class_id}_{k:04d}.jpg" for k in range(1, 5)]

    test_files = sorted(p.name for p in (root / "test").iterdir())
    assert len(test_files) == 4
    for name in test_files:
        assert uuid.UUID(name.removesuffix(".jpg")).version == 4
    header, labels = read_csv(root / "test_labels.csv")
    assert header == ["file", "class_id"]
    assert sorted(r["file"] for r in labels) == test_files
    assert Counter(r["class_id"] for r in labels) == dict.fromkeys(ids, 1)

    header, boxes = read_csv(root / "bounding_boxes.csv")
    assert header == ["file", "x", "y", "width", "height"]
    listed = {r["file"] for r in boxes}
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*.jpg")}
    assert listed == on_disk and len(boxes) == 20
    for r in boxes:
        assert_image(root / r["file"], 64, tuple(int(r[k]) for k in ("x", "y", "width", "height")))


def test_cub_layout(tmp_path: Path) -> None:
    summary = generate_dataset(tmp_path / "cub", layout="cub", **SMALL)
    cub = tmp_path / "cub" / "CUB_200_2011"
    assert summary.class_ids == ("001", "002", "003", "004")

    classes = read_table(cub / "classes.txt")
    assert classes == [[str(k), f"{k:03d}.{n}"] for k, n in enumerate(summary.class_names, start=1)]
    images = read_table(cub / "images.txt")
    labels = read_table(cub / "image_class_labels.txt")
    split = read_table(cub / "train_test_split.txt")
    boxes = read_table(cub / "bounding_boxes.txt")
    ids = [str(i) for i in range(1, 21)]
    for table in (images, labels, split, boxes):
        assert [row[0] for row in table] == ids  # 1-based, every image in every file

    on_disk = {p.relative_to(cub / "images").as_posix() for p in (cub / "images").rglob("*.jpg")}
    assert {path for _, path in images} == on_disk
    for (_, path), (_, label) in zip(images, labels, strict=True):
        assert path.split("/")[0] == classes[int(label) - 1][1]  # the folder is the labelled class
    per_class_split = Counter((label, flag) for (_, label), (_, flag) in zip(labels, split, strict=True))
    assert per_class_split == {(str(k), flag): n for k in range(1, 5) for flag, n in (("1", 4), ("0", 1))}

    for (_, path), row in zip(images, boxes, strict=True):
        assert len(row) == 5 and all(re.fullmatch(r"\d+\.0", v) for v in row[1:]), row
        assert_image(cub / "images" / path, 64, tuple(float(v) for v in row[1:]))


def test_imagefolder_layout(tmp_path: Path) -> None:
    root = tmp_path / "folders"
    summary = generate_dataset(root, layout="imagefolder", **SMALL)
    assert summary.class_ids == summary.class_names
    for split, count in (("train", 4), ("test", 1)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(summary.class_names)
        for name in summary.class_names:
            files = list((root / split / name).glob(f"{name}_*.jpg"))
            assert len(files) == count
    header, boxes = read_csv(root / "bounding_boxes.csv")
    assert header == ["file", "x", "y", "width", "height"]
    assert {r["file"] for r in boxes} == {p.relative_to(root).as_posix() for p in root.rglob("*.jpg")}
    for r in boxes:
        assert_image(root / r["file"], 64, tuple(int(r[k]) for k in ("x", "y", "width", "height")))


@pytest.mark.parametrize(("per_class", "fraction", "expected_test"), [(5, 0.2, 1), (2, 0.1, 1), (6, 0.5, 3),
                                                                    (3, 0.9, 2), (4, 0.0, 0)])
def test_split_sizes(tmp_path: Path, per_class: int, fraction: float, expected_test: int) -> None:
    summary = generate_dataset(tmp_path / "d", layout="imagefolder", num_classes=2, per_class=per_class,
                               size=32, test_fraction=fraction)
    assert summary.test_images == 2 * expected_test
    assert summary.train_images == 2 * (per_class - expected_test)
    assert len(list((tmp_path / "d" / "test").rglob("*.jpg"))) == summary.test_images


@pytest.mark.parametrize("layout", ["competition", "cub", "imagefolder"])
def test_fgvc_readers_take_the_generated_data(tmp_path: Path, layout: str) -> None:
    """The contract with fgvc.data.formats: detected, read without problems, same labels and boxes."""
    from fgvc.data.formats import detect_format, read_dataset

    root = tmp_path / layout
    summary = generate_dataset(root, layout=layout, **SMALL)
    assert detect_format(root) == layout
    index = read_dataset(root)
    assert index.problems == [] or all(p.severity != "error" for p in index.problems)
    assert set(index.classes.ids) == set(summary.class_ids)
    assert Counter(s.split for s in index.samples) == {"train": 16, "test": 4}

    if layout == "cub":
        cub = root / "CUB_200_2011"
        paths = {i: (cub / "images" / p).as_posix() for i, p in read_table(cub / "images.txt")}
        expected = {paths[i]: tuple(float(v) for v in xywh) for i, *xywh in read_table(cub / "bounding_boxes.txt")}
    else:
        expected = {(root / r["file"]).as_posix(): tuple(float(r[k]) for k in ("x", "y", "width", "height"))
                    for r in read_csv(root / "bounding_boxes.csv")[1]}
    test_labels = {r["file"]: r["class_id"] for r in read_csv(root / "test_labels.csv")[1]} \
        if layout == "competition" else {}
    for sample in index.samples:
        x, y, w, h = expected[sample.path.as_posix()]
        assert sample.box_xyxy == (x, y, x + w, y + h)
        class_id = index.classes.ids[sample.label]
        if layout == "competition" and sample.split == "test":  # flat: the class is in test_labels.csv
            assert class_id == test_labels[sample.path.name]
        else:
            assert class_id in sample.path.parent.name


# ----------------------------------------------------------------------------------------------
# Boxes


@pytest.mark.parametrize("seed", range(6))
def test_box_is_tight_around_the_drawn_bird(seed: int) -> None:
    attributes = choose_class_attributes(np.random.default_rng(seed), 4)[seed % 4]
    image, box = render_bird(np.random.default_rng(seed), attributes, 96, background=False)
    pixels = np.asarray(image)
    is_bird = np.any(pixels != np.array(PLAIN_BACKGROUND, dtype=np.uint8), axis=-1)
    x, y, w, h = box
    outside = is_bird.copy()
    outside[y : y + h, x : x + w] = False
    assert not outside.any(), "bird pixels outside the box"
    inside = is_bird[y : y + h, x : x + w]
    # Exclusive extent: the first and last row and column of the box each hold bird pixels.
    assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()

    # The cluttered render of the same generator state has the same bird, hence the same box.
    _, cluttered_box = render_bird(np.random.default_rng(seed), attributes, 96)
    assert cluttered_box == box


def test_object_scale_and_pose_vary() -> None:
    boxes = [render_bird(np.random.default_rng(s), BASE_BIRD, 100, background=False)[1] for s in range(40)]
    longest = np.array([max(w, h) for _, _, w, h in boxes]) / 100
    assert longest.min() >= 0.3 and longest.max() <= 0.9 and longest.max() - longest.min() > 0.2
    assert len({(x, y) for x, y, _, _ in boxes}) > 30


# ----------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    args = {**SMALL, "layout": "competition"}
    first = tree_digest(generate_dataset(tmp_path / "a", **args).root)
    again = tree_digest(generate_dataset(tmp_path / "b", **args).root)
    other = tree_digest(generate_dataset(tmp_path / "c", **{**args, "seed": 4}).root)
    assert first == again
    assert first != other
    assert not set(first.values()) & set(other.values())


def test_images_do_not_depend_on_how_many_are_generated(tmp_path: Path) -> None:
    """Per-image random streams: asking for more images leaves the earlier ones byte-identical."""
    args = {"layout": "imagefolder", "num_classes": 3, "size": 48, "test_fraction": 0.0}
    fewer = tree_digest(generate_dataset(tmp_path / "few", per_class=3, **args).root / "train")
    more = tree_digest(generate_dataset(tmp_path / "more", per_class=5, **args).root / "train")
    assert len(fewer) == 9 and all(more[path] == digest for path, digest in fewer.items())


# ----------------------------------------------------------------------------------------------
# Classes


@pytest.mark.parametrize("attribute", list(ATTRIBUTE_LEVELS))
def test_classes_differ_only_locally(attribute: str) -> None:
    """Changing one part, same pose and scene: only a small region of the object changes."""
    other_level = next(v for v in ATTRIBUTE_LEVELS[attribute] if v != getattr(BASE_BIRD, attribute))
    variant = replace(BASE_BIRD, **{attribute: other_level})
    for seed in range(3):
        a, box = render_bird(np.random.default_rng(seed), BASE_BIRD, 128)
        b, box_b = render_bird(np.random.default_rng(seed), variant, 128)
        assert box == box_b
        changed = np.any(np.asarray(a) != np.asarray(b), axis=-1)
        x, y, w, h = box
        assert changed.any(), f"{attribute} left no trace"
        assert changed[y : y + h, x : x + w].sum() == changed.sum(), "the change leaks outside the bird"
        assert changed.sum() <= MAX_LOCAL_DIFFERENCE * w * h, f"{attribute}: {changed.sum()} px of {w * h}"


def parts_apart(a: BirdAttributes, b: BirdAttributes) -> int:
    return sum(p != q for p, q in zip(a.as_tuple(), b.as_tuple(), strict=True))


def test_classes_come_in_one_part_twins() -> None:
    everything = choose_class_attributes(np.random.default_rng(0), MAX_CLASSES)
    assert len(set(everything)) == MAX_CLASSES >= 200
    for k in range(1, MAX_CLASSES, 2):  # every odd class has a look-alike among the earlier ones ...
        assert min(parts_apart(everything[k], c) for c in everything[:k]) == 1
    for k in range(1, 100, 2):  # ... which, short of the product running out, is its twin
        assert parts_apart(everything[k], everything[k - 1]) == 1
    for seed in range(5):  # pairs are random combinations, not one chain of near-copies
        ten = choose_class_attributes(np.random.default_rng(seed), 10)
        assert ten == choose_class_attributes(np.random.default_rng(seed), 30)[:10]  # prefix-stable
        assert max(parts_apart(a, b) for a in ten for b in ten) >= 3
    for attribute, levels in ATTRIBUTE_LEVELS.items():  # every level of every part is in use
        assert {getattr(c, attribute) for c in everything} == set(levels)


def test_two_hundred_classes(tmp_path: Path) -> None:
    summary = generate_dataset(tmp_path / "many", layout="competition", num_classes=200, per_class=2,
                               size=32, test_fraction=0.0)
    assert len(set(summary.class_ids)) == len(set(summary.class_names)) == 200
    assert len(list((tmp_path / "many" / "train").iterdir())) == 200


# ----------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(("override", "message"), [
    ({"num_classes": 1}, f"num_classes must be between 2 and {MAX_CLASSES}"),
    ({"num_classes": MAX_CLASSES + 1}, f"num_classes must be between 2 and {MAX_CLASSES}"),
    ({"per_class": 1}, "per_class must be at least 2"),
    ({"size": 31}, "size must be at least 32 pixels"),
    ({"layout": "voc"}, "layout must be one of competition, cub, imagefolder, got 'voc'"),
    ({"test_fraction": 1.0}, r"test_fraction must be in \[0, 1\)"),
    ({"seed": -1}, "seed must be a non-negative integer"),
])  # fmt: skip
def test_invalid_arguments(tmp_path: Path, override: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        generate_dataset(tmp_path / "out", **{**SMALL, **override})
    assert not (tmp_path / "out").exists()


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FolderNotEmptyError, match="pick an empty folder") as err:
        generate_dataset(out, **SMALL)
    assert str(out) in str(err.value) and "delete it" in str(err.value)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    a_file = tmp_path / "file.jpg"
    a_file.write_bytes(b"")
    with pytest.raises(FolderNotEmptyError, match="is a file"):
        generate_dataset(a_file, **SMALL)


def test_accepts_an_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    generate_dataset(out, **SMALL)
    assert (out / "test_labels.csv").is_file()


def test_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "render_bird", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_dataset(tmp_path / "out", **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_bad_attribute_value() -> None:
    with pytest.raises(ValueError, match=r"BirdAttributes.wing_bars must be one of \(1, 2, 3\), got 5"):
        replace(BASE_BIRD, wing_bars=5)
