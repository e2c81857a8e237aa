"""The format registry: detection order, reader options from a config, and the errors that name them."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fgvc.data.formats import (
    _registry,
    check_reader_options,
    detect_format,
    format_names,
    get_format,
    read_dataset,
    reader_options,
    register_format,
)
from fgvc.data.formats._registry import ReaderOption
from fgvc.data.index import DatasetIndex
from fgvc.errors import ConfigError
from tests.data.fakes import aircraft_tree, cub_tree, split_sizes
from tests.data.fixtures import competition_tree


def test_detection_order_is_annotation_formats_first_and_class_folders_last():
    assert format_names() == ["cub", "aircraft", "cars", "imagelist", "competition", "imagefolder"]


def test_reader_options_lists_each_keyword_with_its_default():
    assert reader_options("aircraft") == {"level": "variant", "use_official_val": False, "crop_banner": False}
    assert get_format("aircraft").option("level").choices == ("variant", "family", "manufacturer")
    for name in ("cub", "cars", "imagelist", "competition", "imagefolder"):
        assert reader_options(name) == {}


def test_every_aircraft_option_reaches_the_reader_through_read_dataset(tmp_path):
    data = aircraft_tree(tmp_path)
    index = read_dataset(data.parent, "aircraft", level="family", use_official_val=True, crop_banner=True)
    assert index.classes.ids[:2] == ("A300", "Boeing 707")  # families.txt, not variants.txt
    assert split_sizes(index) == {"train": 4, "val": 3, "test": 4}
    assert index.crop_bottom_px == 20
    detected = read_dataset(data.parent, None, level="manufacturer")  # auto-detected: same options
    assert detected.format == "aircraft" and len(detected.classes) == 5


def test_an_option_of_another_format_names_who_takes_it(tmp_path):
    root = cub_tree(tmp_path)
    with pytest.raises(ConfigError) as e:
        read_dataset(root, "cub", level="family")
    assert str(e.value) == (
        "data.options.level: the cub format does not take it; the cub format takes no options. level is an option "
        "of aircraft: set data.format to that format if the dataset is one, or remove data.options.level.")


def test_an_option_the_detected_format_does_not_take_names_the_detected_format(tmp_path):
    root = cub_tree(tmp_path)
    with pytest.raises(ConfigError, match=rf"^data.options.crop_banner: the dataset at {root} was detected as cub, "
                                          "which does not take it; the cub format takes no options. crop_banner "
                                          "is an option of aircraft"):
        read_dataset(root, crop_banner=True)


def test_a_misspelt_option_suggests_the_closest_and_lists_the_format_options(tmp_path):
    with pytest.raises(ConfigError) as e:
        read_dataset(aircraft_tree(tmp_path), "aircraft", levle="family")
    assert str(e.value) == (
        "data.options.levle: the aircraft format does not take it; the aircraft format takes: "
        "level (variant|family|manufacturer; default variant), use_official_val (true|false; default false), "
        "crop_banner (true|false; default false). Did you mean 'level'?")


def test_a_value_outside_the_allowed_ones_lists_them_and_suggests_one(tmp_path):
    data = aircraft_tree(tmp_path)
    with pytest.raises(ConfigError) as e:
        read_dataset(data, "aircraft", level="varient")
    assert str(e.value) == ("data.options.level: 'varient' is not allowed for the aircraft format; allowed: "
                            "variant|family|manufacturer (default variant). Did you mean 'variant'?")
    with pytest.raises(ConfigError, match=r"data.options.crop_banner: 'yes' is not allowed .* allowed: true\|false"):
        read_dataset(data, "aircraft", crop_banner="yes")
    with pytest.raises(ConfigError, match="data.options.use_official_val: 1 is not allowed"):
        read_dataset(data, "aircraft", use_official_val=1)  # a bool option takes a YAML true/false only


def test_option_errors_come_before_any_disk_access(tmp_path):
    with pytest.raises(ConfigError, match="data.options.level"):
        read_dataset(tmp_path / "does-not-exist", "cub", level="family")


def test_a_direct_reader_call_checks_its_options_too(tmp_path):
    from fgvc.data.formats.aircraft import read_aircraft

    with pytest.raises(ConfigError, match=re.escape("'model' is not allowed for the aircraft format; allowed: "
                                                    "variant|family|manufacturer")):
        read_aircraft(aircraft_tree(tmp_path), level="model")


@pytest.fixture
def private_registry(monkeypatch):
    """A copy of the registry, so a test may register formats without leaking them to other tests."""
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))


def test_a_registered_format_is_detected_by_priority_and_read_with_its_options(tmp_path, private_registry):
    calls = []

    def read_toy(root: Path, *, colour: str = "red") -> DatasetIndex:
        calls.append((root, colour))
        return read_dataset(root, "competition")

    register_format("toy", reader=read_toy, detector=lambda root: (root / "toy.marker").is_file(),
                    tree="ROOT/toy.marker", options=[ReaderOption("colour", "red", ("red", "blue"))], priority=0)
    root = competition_tree(tmp_path, {"01_a": 1})
    assert detect_format(root) == "competition"
    (root / "toy.marker").touch()
    assert detect_format(root) == "toy" and format_names()[0] == "toy"
    read_dataset(root, colour="blue")
    assert calls == [(root, "blue")]
    assert reader_options("toy") == {"colour": "red"}


def test_registration_refuses_options_that_do_not_match_the_reader(private_registry):
    def read_odd(root: Path, *, level: str = "a", hidden: bool = False) -> DatasetIndex:
        raise AssertionError("never called")

    with pytest.raises(TypeError, match=r"takes \['hidden', 'level'\] but the spec declares \['level'\]"):
        register_format("odd", reader=read_odd, detector=bool, tree="",
                        options=[ReaderOption("level", "a")])
    with pytest.raises(TypeError, match="option 'level' defaults to 'b' in the spec but 'a' in read_odd"):
        register_format("odd", reader=read_odd, detector=bool, tree="",
                        options=[ReaderOption("level", "b"), ReaderOption("hidden", False)])
    with pytest.raises(ValueError, match="'cub' is already registered by fgvc.data.formats.cub"):
        register_format("cub", reader=read_odd, detector=bool, tree="",
                        options=[ReaderOption("level", "a"), ReaderOption("hidden", False)])
    assert "odd" not in format_names() and get_format("cub").reader.__name__ == "read_cub"


def test_without_scipy_every_other_format_still_reads(tmp_path):
    """Cars imports scipy inside its reader only: a missing scipy never blocks another format."""
    competition = competition_tree(tmp_path / "competition", {"01_a": 1})
    cars = tmp_path / "cars"
    (cars / "devkit").mkdir(parents=True)
    (cars / "devkit" / "cars_meta.mat").write_bytes(b"")  # detected by name; never opened without scipy
    script = textwrap.dedent(f"""
        import sys
        sys.modules["scipy"] = None  # as if not installed
        from fgvc.data.formats import detect_format, read_dataset
        from fgvc.errors import FgvcError
        assert read_dataset({str(competition)!r}).format == "competition"
        assert detect_format({str(cars)!r}) == "cars"
        try:
            read_dataset({str(cars)!r})
        except FgvcError as e:
            print("refused:", e)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused: reading Stanford Cars' .mat files needs scipy")


def test_options_checked_before_the_format_is_known_refuse_only_keys_no_format_takes():
    check_reader_options("auto", {"level": "family", "crop_banner": True})  # aircraft may be detected later
    check_reader_options(None, {})
    with pytest.raises(ConfigError) as e:
        check_reader_options("auto", {"crop_baner": True})
    assert str(e.value) == (
        "data.options.crop_baner: no dataset format takes it (the aircraft format takes: level "
        "(variant|family|manufacturer; default variant), use_official_val (true|false; default false), "
        "crop_banner (true|false; default false)). Did you mean 'crop_banner'?")
