"""The presets in configs/: every one loads, names itself after its file, builds where its model is
registered; the paper figures they carry and the checks on the `paper:` section."""

import pytest

from fgvc.config import CONFIG_DIR, ConfigError, load_config, paper_note, preset_names
from fgvc.data.transforms import RECIPES
from fgvc.models import MODEL_REGISTRY, create_model, model_spec

PRESETS = preset_names()
DATASETS = {"cub": "CUB-200-2011", "cars": "Stanford Cars", "aircraft": "FGVC-Aircraft"}
# what each paper prints for its ResNet (percent): PMG and MMAL-Net ResNet-50, CAL ResNet-101
PAPER_TOP1 = {
    "pmg_resnet50_cub": 89.6, "pmg_resnet50_cars": 95.1, "pmg_resnet50_aircraft": 93.4,
    "cal_resnet101_cub": 90.6, "cal_resnet101_cars": 95.5, "cal_resnet101_aircraft": 94.2,
    "mmal_resnet50_cub": 89.6, "mmal_resnet50_cars": 95.0, "mmal_resnet50_aircraft": 94.7,
    "transfg_vitb16_cub": 91.7, "pim_swinl_cub": 92.8,
}
SMALL_BACKBONES = {"vit": "vit_ti16", "swin": "swin_t"}  # a small backbone of the preset's family


def test_the_papers_presets_are_there():
    for method, backbone in (("pmg", "resnet50"), ("cal", "resnet101"), ("mmal", "resnet50"), ("transfg", "vitb16")):
        for layout in ("cub", "cars", "aircraft", "competition"):
            assert f"{method}_{backbone}_{layout}" in PRESETS
    assert {"pim_swinl_cub", "pim_swinl_competition"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_is_named_after_its_file(name):
    config = load_config(name)
    assert config.name == name
    assert (CONFIG_DIR / f"{name}.yaml").read_text(encoding="utf-8").startswith("# "), "a preset opens with a comment"


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_names_a_known_transform(name):
    transform = load_config(name).model.transform
    if transform == "cal" and transform not in RECIPES:
        pytest.skip("the 'cal' recipe is not registered yet")
    assert transform == "auto" or transform in RECIPES


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_builds_its_model_with_its_options(name):
    """The options reach the model's constructor (on a small backbone), and a backbone_lr has the model's
    parameter groups to apply to (without them it would be ignored)."""
    config = load_config(name)
    if config.model.name not in MODEL_REGISTRY:
        pytest.skip(f"model {config.model.name!r} is not registered yet: {name} is only parsed")
    small = next((b for family, b in SMALL_BACKBONES.items() if config.model.backbone.startswith(family)), "resnet18")
    model = create_model(config.model.name, 3, backbone=small, **config.model.options)
    assert sum(p.numel() for p in model.parameters()) > 0
    if config.optim.backbone_lr is not None:
        assert model_spec(config.model.name).param_groups is not None, name


@pytest.mark.parametrize("name", PRESETS)
def test_paper_figures_are_on_the_presets_dataset_and_only_there(name):
    config = load_config(name)
    expected = PAPER_TOP1.get(name)
    assert config.paper.top1 == expected
    if expected is None:
        assert config.paper.note() is None and config.paper.dataset is None
        return
    assert config.paper.dataset == DATASETS[config.data.format]  # never a figure on another layout
    shown = {"vit_b16": "ViT-B/16", "swin_l384": "Swin-L"}.get(config.model.backbone,
                                                                config.model.backbone.replace("resnet", "ResNet-"))
    assert config.paper.source and shown in config.paper.source  # the backbone the figure was measured with


def test_pmg_and_cal_presets_follow_the_authors_code():
    pmg = load_config("pmg_resnet50_cars")
    assert (pmg.model.name, pmg.model.backbone, pmg.model.input_size, pmg.model.transform) == (
        "pmg", "resnet50", 448, "fbsd")
    assert pmg.model.options == {"feature_size": 512, "part_feature": 1024}
    assert (pmg.optim.lr, pmg.optim.backbone_lr, pmg.optim.momentum, pmg.optim.weight_decay) == (
        0.002, 0.0002, 0.9, 0.0005)
    assert (pmg.schedule.name, pmg.schedule.per_epoch, pmg.train.epochs, pmg.train.batch_size) == (
        "cosine", True, 200, 16)
    assert pmg.train.drop_last
    cal = load_config("cal_resnet101_aircraft")
    assert (cal.model.name, cal.model.backbone, cal.model.input_size, cal.model.transform) == (
        "cal", "resnet101", 448, "cal")
    assert cal.model.options == {"attentions": 32, "beta": 0.05, "last_stride": 1, "inference": "infer"}
    assert (cal.optim.lr, cal.optim.backbone_lr, cal.optim.momentum, cal.optim.weight_decay) == (
        0.001, None, 0.9, 1e-5)
    assert (cal.train.epochs, cal.train.batch_size, cal.train.drop_last) == (160, 16, True)  # 4 processes x 4


def test_paper_section_is_checked_like_the_others(tmp_path):
    with pytest.raises(ConfigError, match=r"paper.top1 = 0.896: give the percentage .* \(e.g. 89.6\)"):
        load_config("demo", ["paper.top1=0.896"])
    with pytest.raises(ConfigError, match="paper.top1 = 101.0 is out of range: it must be between 0 and 100"):
        load_config("demo", ["paper.top1=101"])
    with pytest.raises(ConfigError, match="paper.top1 is missing"):
        load_config("demo", ["paper.dataset=CUB-200-2011"])
    with pytest.raises(ConfigError, match="unknown config key 'paper.top_1'. Did you mean 'paper.top1'"):
        load_config("demo", ["paper.top_1=89.6"])
    with pytest.raises(ConfigError, match="'paper.top1' should be float"):
        load_config("demo", ["paper.top1=high"])
    path = tmp_path / "mine.yaml"
    path.write_text("paper:\n  top1: 93\n  dataset: FGVC-Aircraft\n")
    assert load_config(path).paper.note() == "paper: 93.0% (FGVC-Aircraft)"


def test_paper_never_changes_training():
    plain = load_config("mmal_resnet50_cub").to_dict()
    noted = load_config("mmal_resnet50_cub", ["paper.top1=50"]).to_dict()
    assert plain.pop("paper") != noted.pop("paper") and plain == noted


def test_paper_note_of_saved_configs():
    """A run's config.yaml or a checkpoint's dict: written before the section existed, without a figure, with one."""
    assert paper_note(None) is None and paper_note({"name": "old", "model": {"name": "fbsd"}}) is None
    assert paper_note(load_config("demo").to_dict()) is None
    assert paper_note(load_config("pmg_resnet50_cub").to_dict()) == (
        "paper: 89.6% (CUB-200-2011; Du et al., ECCV 2020, Table 2; ResNet-50)")
    assert paper_note({"paper": {"top1": 89.65}}) == "paper: 89.65%"
