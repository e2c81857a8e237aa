"""Tiny but structurally faithful copies of the CUB-200-2011, FGVC-Aircraft and Stanford Cars layouts.

The tables below are the whole content of each fake; the tests compare what the readers return
with values computed by hand from these lines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.imaging import write_image

# -- CUB-200-2011 ------------------------------------------------------------------------------------

# classes.txt: "<number> <ID>.<Name>"; the real file runs 1..200, this one skips 4..9.
CUB_CLASSES = [
    ("1", "001.Black_footed_Albatross"),
    ("2", "002.Laysan_Albatross"),
    ("3", "003.Sooty_Albatross"),
    ("10", "010.Red_winged_Blackbird"),
]
# (image number, class number, path under images/, 1=train 0=test, "x y w h")
CUB_IMAGES = [
    ("1", "1", "001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg", "0", "3.0 4.0 20.0 15.0"),
    ("2", "1", "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg", "1", "0.0 0.0 40.0 30.0"),
    ("3", "1", "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55.jpg", "1", "10.0 5.0 12.0 9.0"),
    ("4", "2", "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg", "1", "1.0 2.0 30.0 20.0"),
    ("5", "2", "002.Laysan_Albatross/Laysan_Albatross_0003_1033.jpg", "0", "5.0 5.0 10.0 10.0"),
    ("6", "3", "003.Sooty_Albatross/Sooty_Albatross_0001_796366.jpg", "1", "2.0 3.0 4.0 5.0"),
    ("7", "3", "003.Sooty_Albatross/Sooty_Albatross_0003_1078.jpg", "0", "7.0 1.0 25.0 27.0"),
    ("8", "10", "010.Red_winged_Blackbird/Red_Winged_Blackbird_0001_3695.jpg", "1", "12.5 6.5 20.0 14.0"),
    ("9", "10", "010.Red_winged_Blackbird/Red_Winged_Blackbird_0003_3792.jpg", "0", "0.0 10.0 39.0 19.0"),
    ("10", "10", "010.Red_winged_Blackbird/Red_Winged_Blackbird_0005_5636.jpg", "1", "4.0 4.0 8.0 8.0"),
]


def write_lines(path: Path, lines: list[str], crlf: bool = False) -> Path:
    """LF with a final newline, as the real files are; ``crlf`` writes CRLF and leaves the last one off."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\r\n".join(lines) if crlf else "".join(f"{line}\n" for line in lines)
    path.write_bytes(text.encode("utf-8"))
    return path


def cub_tree(parent: Path, *, boxes: bool = True, crlf: bool = False) -> Path:
    """Write ``parent/CUB_200_2011/`` as extracted from CUB_200_2011.tgz; returns that folder."""
    base = parent / "CUB_200_2011"
    write_lines(base / "classes.txt", [f"{n} {folder}" for n, folder in CUB_CLASSES], crlf)
    write_lines(base / "images.txt", [f"{i} {rel}" for i, _, rel, _, _ in CUB_IMAGES], crlf)
    write_lines(base / "image_class_labels.txt", [f"{i} {c}" for i, c, _, _, _ in CUB_IMAGES], crlf)
    write_lines(base / "train_test_split.txt", [f"{i} {s}" for i, _, _, s, _ in CUB_IMAGES], crlf)
    if boxes:
        write_lines(base / "bounding_boxes.txt", [f"{i} {b}" for i, _, _, _, b in CUB_IMAGES], crlf)
    for n, (_, _, rel, _, _) in enumerate(CUB_IMAGES):
        write_image(base / "images" / rel, size=(40, 30), seed=n)
    (parent / "attributes.txt").write_text("1 has_bill_shape::curved_(up_or_down)\n")  # beside it in the tarball
    return base


# -- FGVC-Aircraft -----------------------------------------------------------------------------------

# The list files, in file order (the real ones are alphabetical-ish); "Tu-154" is listed but unused.
AIRCRAFT_LISTS = {
    "variants.txt": ["707-320", "A300B4", "Cessna 172", "DC-10", "DC-9", "F/A-18", "Tu-154"],
    "families.txt": ["Boeing 707", "A300", "Cessna 172", "DC-10", "DC-9", "F/A-18", "Tu-154"],
    "manufacturers.txt": ["Airbus", "Boeing", "Cessna", "McDonnell Douglas", "Tupolev"],
}
# (image ID, variant, family, manufacturer, split, "xmin ymin xmax ymax" 1-based inclusive)
AIRCRAFT_IMAGES = [
    ("0034309", "Cessna 172", "Cessna 172", "Cessna", "train", "1 1 40 30"),
    ("1042658", "F/A-18", "F/A-18", "McDonnell Douglas", "train", "5 3 36 28"),
    ("0056978", "707-320", "Boeing 707", "Boeing", "train", "2 2 20 10"),
    ("0231111", "A300B4", "A300", "Airbus", "train", "10 4 30 25"),
    ("0062765", "A300B4", "A300", "Airbus", "val", "3 5 33 22"),
    ("0101542", "DC-9", "DC-9", "McDonnell Douglas", "val", "6 7 38 29"),
    ("0255555", "DC-10", "DC-10", "McDonnell Douglas", "val", "1 2 3 4"),
    ("0134567", "DC-10", "DC-10", "McDonnell Douglas", "test", "4 4 24 24"),
    ("0145890", "Cessna 172", "Cessna 172", "Cessna", "test", "8 9 31 26"),
    ("0200001", "F/A-18", "F/A-18", "McDonnell Douglas", "test", "2 6 39 30"),
    ("0211111", "707-320", "Boeing 707", "Boeing", "test", "11 12 13 14"),
]
AIRCRAFT_LEVEL_COLUMN = {"variant": 1, "family": 2, "manufacturer": 3}


def aircraft_tree(root: Path, *, boxes: bool = True, crlf: bool = False) -> Path:
    """Write ``root/fgvc-aircraft-2013b/data/`` as extracted from fgvc-aircraft-2013b.tar.gz; returns data/."""
    data = root / "fgvc-aircraft-2013b" / "data"
    for name, lines in AIRCRAFT_LISTS.items():
        write_lines(data / name, lines, crlf)
    for level, column in AIRCRAFT_LEVEL_COLUMN.items():
        for split, members in (("train", ("train",)), ("val", ("val",)), ("test", ("test",)),
                               ("trainval", ("train", "val"))):
            lines = [f"{row[0]} {row[column]}" for row in AIRCRAFT_IMAGES if row[4] in members]
            write_lines(data / f"images_{level}_{split}.txt", lines, crlf)
    write_lines(data / "images_test.txt", [row[0] for row in AIRCRAFT_IMAGES if row[4] == "test"], crlf)
    if boxes:
        write_lines(data / "images_box.txt", [f"{row[0]} {row[5]}" for row in AIRCRAFT_IMAGES], crlf)
    for n, row in enumerate(AIRCRAFT_IMAGES):
        write_image(data / "images" / f"{row[0]}.jpg", size=(40, 50), seed=n)  # 20 rows of it: the banner
    return data


# -- Stanford Cars -----------------------------------------------------------------------------------

CARS_CLASS_NAMES = [
    "AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012", "Acura TL Type-S 2008",
    "Acura TSX Sedan 2012", "Acura Integra Type R 2001", "Acura ZDX Hatchback 2012",
    "Aston Martin V8 Vantage Convertible 2012", "Aston Martin V8 Vantage Coupe 2012",
    "Aston Martin Virage Convertible 2012", "Aston Martin Virage Coupe 2012",
]
# (file name, class number 1-based, x1, y1, x2, y2 1-based inclusive)
CARS_TRAIN = [
    ("00001.jpg", 10, 5, 4, 30, 25),
    ("00002.jpg", 1, 1, 1, 40, 30),
    ("00003.jpg", 2, 3, 2, 20, 18),
    ("00004.jpg", 11, 7, 6, 33, 27),
    ("00005.jpg", 10, 2, 3, 38, 28),
    ("00006.jpg", 1, 10, 5, 35, 29),
]
CARS_TEST = [
    ("00001.jpg", 2, 4, 4, 36, 26),
    ("00002.jpg", 11, 1, 2, 39, 29),
    ("00003.jpg", 1, 6, 3, 25, 20),
    ("00004.jpg", 10, 2, 2, 30, 30),
]


def _cell_row(strings: list[str]) -> np.ndarray:
    """A MATLAB 1xN cell array of strings."""
    cell = np.empty((1, len(strings)), dtype=object)
    for i, s in enumerate(strings):
        cell[0, i] = np.array([s])
    return cell


def _struct_row(fields: list[str], rows: list[tuple]) -> np.ndarray:
    """A MATLAB 1xN struct array: every field of every element is itself a MATLAB array, as in the real files."""
    structs = np.empty((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, row in enumerate(rows):
        structs[0, i] = row
    return structs


def _devkit_annotations(rows: list[tuple], number_type: type = np.uint16) -> np.ndarray:
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    return _struct_row(fields, [
        (*(np.array([[v]], dtype=number_type) for v in (x1, y1, x2, y2)), np.array([[c]], dtype=np.uint8),
         np.array([fname]))
        for fname, c, x1, y1, x2, y2 in rows
    ])


def cars_devkit_tree(root: Path, *, test_in_devkit: bool = False, train: list[tuple] | None = None,
                     class_names: list[str] | None = None) -> Path:
    """The devkit layout: devkit/*.mat, cars_train/, cars_test/, cars_test_annos_withlabels.mat."""
    from scipy.io import savemat

    train = CARS_TRAIN if train is None else train
    devkit = root / "devkit"
    devkit.mkdir(parents=True, exist_ok=True)
    savemat(devkit / "cars_meta.mat", {"class_names": _cell_row(class_names or CARS_CLASS_NAMES)})
    savemat(devkit / "cars_train_annos.mat", {"annotations": _devkit_annotations(train)})
    test_rows = _struct_row(["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "fname"],
                            [(*(np.array([[v]], dtype=np.uint16) for v in box), np.array([f]))
                             for f, _, *box in CARS_TEST])
    savemat(devkit / "cars_test_annos.mat", {"annotations": test_rows})  # the unlabelled one: never read
    labelled = devkit if test_in_devkit else root
    savemat(labelled / "cars_test_annos_withlabels.mat", {"annotations": _devkit_annotations(CARS_TEST)})
    for n, (fname, *_) in enumerate(train):
        write_image(root / "cars_train" / fname, size=(40, 30), seed=n)
    for n, (fname, *_) in enumerate(CARS_TEST):
        write_image(root / "cars_test" / fname, size=(40, 30), seed=100 + n)
    return root


# cars_annos.mat: the same ten images, numbered through, with a test flag.
CARS_ALL = [(f"car_ims/{n:06d}.jpg", c, x1, y1, x2, y2, 0) for n, (_, c, x1, y1, x2, y2) in enumerate(CARS_TRAIN, 1)]
CARS_ALL += [(f"car_ims/{n:06d}.jpg", c, x1, y1, x2, y2, 1)
             for n, (_, c, x1, y1, x2, y2) in enumerate(CARS_TEST, len(CARS_TRAIN) + 1)]


def cars_single_file_tree(root: Path, *, rows: list[tuple] | None = None) -> Path:
    """The single-file layout: cars_annos.mat (annotations + class_names) and car_ims/."""
    from scipy.io import savemat

    rows = CARS_ALL if rows is None else rows
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    annotations = _struct_row(fields, [
        (np.array([path]), *(np.array([[float(v)]]) for v in (x1, y1, x2, y2)), np.array([[c]], dtype=np.uint8),
         np.array([[test]], dtype=np.uint8))
        for path, c, x1, y1, x2, y2, test in rows
    ])
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / "cars_annos.mat", {"annotations": annotations, "class_names": _cell_row(CARS_CLASS_NAMES)})
    for n, (path, *_) in enumerate(rows):
        write_image(root / path, size=(40, 30), seed=n)
    return root


def by_id(index):
    return {s.image_id: s for s in index.samples}


def split_sizes(index):
    return {split: len(index.split(split)) for split in index.splits}
