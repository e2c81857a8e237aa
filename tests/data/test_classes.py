import json

import pytest

from fgvc.data.classes import ClassTable, ClassTableError


def test_numeric_ids_keep_their_spelling_and_sort_numerically():
    table = ClassTable.from_ids(["04780", "04615", "04700"], {"04780": "Sooty Albatross"})
    assert table.ids == ("04615", "04700", "04780")
    assert table.index_of("04780") == 2
    assert table.id_of(2) == "04780"  # never int()-parsed and re-padded
    assert table.name_of(2) == "Sooty Albatross"
    assert table.name_of(0) == "04615"  # name defaults to the ID


def test_numeric_order_is_by_value_not_by_string():
    assert ClassTable.from_ids(["10", "9", "100"]).ids == ("9", "10", "100")


def test_mixed_ids_use_natural_sort():
    assert ClassTable.from_ids(["a10", "a2", "B1", "a1"]).ids == ("a1", "a2", "a10", "B1")


def test_ids_equal_after_int_parsing_are_an_error_naming_both_folders():
    with pytest.raises(ClassTableError) as e:
        ClassTable.from_ids(["04615", "4615"], sources={"04615": "04615_a", "4615": "4615_b"})
    assert "04615_a" in str(e.value) and "4615_b" in str(e.value)


def test_duplicate_and_empty_ids_are_rejected():
    with pytest.raises(ClassTableError, match="appears twice"):
        ClassTable(("a", "a"), ("x", "y"))
    with pytest.raises(ClassTableError, match="empty"):
        ClassTable(("",), ("x",))


def test_dict_and_file_round_trip(tmp_path):
    table = ClassTable(("04615", "04780"), ("Black footed Albatross", "Sooty Albatross"))
    assert ClassTable.from_dict(table.to_dict()) == table
    path = tmp_path / "classes.json"
    table.save(path)
    assert json.loads(path.read_text())["ids"] == ["04615", "04780"]
    assert ClassTable.load(path) == table
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ClassTableError, match="bad.json"):
        ClassTable.load(bad)
    bad.write_text('{"ids": ["a"]}')
    with pytest.raises(ClassTableError, match="bad.json"):
        ClassTable.load(bad)


def test_diff_reports_missing_extra_renamed_and_reindexed():
    a = ClassTable(("1", "2", "3"), ("one", "two", "three"))
    b = ClassTable(("2", "1", "4"), ("two", "uno", "four"))
    d = a.diff(b)
    assert d.missing == ("3",)
    assert d.extra == ("4",)
    assert d.renamed == (("1", "one", "uno"),)
    assert set(d.reindexed) == {("1", 0, 1), ("2", 1, 0)}
    text = d.describe("the run", "the data")
    assert "1 class(es) only in the run: 3\n" in text and "'one' -> 'uno'" in text
    assert not a.diff(a)
    with pytest.raises(ClassTableError, match="1 class\\(es\\) only in the data: 4"):
        a.require_same(b)
    a.require_same(ClassTable(("1", "2", "3"), ("x", "y", "z")))  # names alone may differ
