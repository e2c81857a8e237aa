import pytest

from fgvc.data.classes import ClassTable
from fgvc.data.dataset import FGVCDataset, LabelError
from fgvc.data.index import DatasetIndex, Sample
from fgvc.data.split import apply_split, load_split, save_split, stratified_split
from fgvc.errors import DataError


def _index(tmp_path, counts, labels=None):
    samples = []
    for label, n in enumerate(counts):
        for i in range(n):
            samples.append(Sample(tmp_path / f"{label}_{i}.jpg", label, "train", f"{label}_{i}.jpg"))
    if labels is not None:
        samples = [Sample(s.path, lab, s.split, s.image_id) for s, lab in zip(samples, labels, strict=True)]
    table = ClassTable(tuple(f"0{4615 + i}" for i in range(len(counts))), tuple(f"c{i}" for i in range(len(counts))))
    return DatasetIndex(tmp_path, "competition", table, samples)


def test_raw_class_ids_as_labels_fail_before_any_model(tmp_path):
    index = _index(tmp_path, [1, 1], labels=[0, 4780])
    with pytest.raises(LabelError) as e:
        FGVCDataset(index)
    assert "1_0.jpg" in str(e.value) and "4780" in str(e.value) and "[0, 2)" in str(e.value)


def test_labels_checked_against_the_model_size_name_the_class_id(tmp_path):
    index = _index(tmp_path, [1, 1, 1])
    with pytest.raises(LabelError) as e:
        FGVCDataset(index, num_classes=2)
    assert "2_0.jpg" in str(e.value) and "class ID 04617" in str(e.value)


def test_stratified_split_is_seeded_and_per_class(tmp_path):
    index = _index(tmp_path, [20, 10, 2, 1])
    train_ids, val_ids = stratified_split(index, 0.1, seed=3)
    assert sorted(train_ids + val_ids) == sorted(s.image_id for s in index)
    per_class = [sum(v.startswith(f"{c}_") for v in val_ids) for c in range(4)]
    assert per_class == [2, 1, 1, 0]  # round(2.0), round(1.0), at least one of two, never a lone image
    assert stratified_split(index, 0.1, seed=3) == (train_ids, val_ids)
    assert stratified_split(index, 0.1, seed=4)[1] != val_ids
    assert stratified_split(index, 0.0)[1] == []


def test_saved_split_is_reapplied_exactly(tmp_path):
    index = _index(tmp_path, [5, 5])
    _, val_ids = stratified_split(index, 0.2, seed=0)
    save_split(tmp_path / "run" / "split.json", val_ids, seed=0, val_fraction=0.2)
    loaded = load_split(tmp_path / "run" / "split.json")
    train, val = apply_split(index, loaded)
    assert sorted(s.image_id for s in val) == sorted(val_ids)
    assert len(train) == 8 and len(val) == 2
    with pytest.raises(DataError, match="data changed"):
        apply_split(index, ["gone.jpg"])
