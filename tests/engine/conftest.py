"""Tiny synthetic datasets and configs for the workflow tests (resnet18, 64 px, a few images)."""

from pathlib import Path

import pytest

from fgvc.config import load_config
from fgvc.data.synthetic import generate_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "data"
    generate_dataset(root, layout="competition", num_classes=3, per_class=8, size=64, seed=0, test_fraction=0.25)
    return root


@pytest.fixture(scope="session")
def other_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("other") / "data"
    generate_dataset(root, layout="competition", num_classes=4, per_class=6, size=64, seed=5, test_fraction=0.25)
    return root


def tiny_config(data: Path, **overrides):
    items = [f"{k}={v}" for k, v in {
        "data.num_workers": 0, "data.val_fraction": 0.2, "model.input_size": 64, "model.backbone": "resnet18",
        "train.batch_size": 4, "train.eval_batch_size": 8, "train.epochs": 2, "optim.name": "sgd", "optim.lr": 0.01,
        **overrides}.items()]
    config = load_config("demo", items)
    config.data.root = str(data)
    return config


def start_trainer(config, run_dir, **kwargs):
    """A Trainer on a new run of ``config`` in ``run_dir`` (what `fgvc train` builds)."""
    from fgvc.engine.run import Run
    from fgvc.engine.trainer import Trainer

    return Trainer(Run.start(config, run_dir), **kwargs)
