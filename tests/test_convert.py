"""`fgvc convert`: the authors' checkpoints of FBSD, MMAL-Net, PMG and CAL as fgvc runs, strictly, read without running
anything from the file.

Each authors' file is made here from a randomly initialised fgvc model by the inverse of the documented mapping,
written below from the authors' key names (chaomaer/FBSD 83c4f2f, ZF4444/MMAL-Net 4d5081b, PRIS-CV/PMG db7a7d7,
raoyongming/CAL; REFERENCE.md), and saved in the authors' container: FBSD ``torch.save(net.state_dict())``, MMAL-Net
``torch.save({"epoch", "model_state_dict", "learning_rate"})``, PMG ``torch.save(net)`` of a model whose class
cannot be imported when the file is read, CAL ``torch.save({"logs", "state_dict", "feature_center"})``. The models
run on a narrow ResNet (tests/models/narrow.py) at 128 px.
"""

from __future__ import annotations

import os
import re
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from fgvc.cli import main
from fgvc.engine.checkpoint import load_checkpoint
from fgvc.engine.safe_unpickle import RefusedGlobal, module_state_dict, restricted_load
from fgvc.models import create_model
from fgvc.models.registry import BACKBONE_REGISTRY, BackboneSpec
from tests.models.narrow import narrow_resnet
from tests.tiny import tiny_synth_args

BACKBONE = "narrow_convert_test"
SETS = [f"model.backbone={BACKBONE}", "model.input_size=128", "data.format=auto", "data.num_workers=0"]
OPTIONS = {  # small heads on the narrow backbone (the authors' 512/1024 would dwarf it)
    "fbsd": {"feature_size": 8, "part_feature": 16},
    "mmal": {},
    "pmg": {"feature_size": 8},
    "cal": {"attentions": 4},
}

# fgvc key -> the authors' key: (pattern on fgvc's key, the authors' spelling), first match wins
INVERSE = {
    "fbsd": [  # their ResNet wrapper `features`: layer0_2 = Sequential(conv1, bn1, relu, maxpool, layer1, layer2)
        (r"^backbone\.body\.conv1\.", "features.layer0_2.0."),
        (r"^backbone\.body\.bn1\.", "features.layer0_2.1."),
        (r"^backbone\.body\.layer1\.", "features.layer0_2.4."),
        (r"^backbone\.body\.layer2\.", "features.layer0_2.5."),
        (r"^backbone\.body\.layer3\.", "features.layer3.0."),
        (r"^backbone\.body\.layer4\.", "features.layer4.0."),
        (r"^fbsm\.(\d)\.conv\.", lambda m: f"features.strip{int(m[1]) + 1}.stripconv.0."),  # FSBM.stripconv
        (r"^fbsm\.(\d)\.bn\.", lambda m: f"features.strip{int(m[1]) + 1}.stripconv.1."),
        (r"^conv_blocks\.(\d)\.(\d)\.0\.", lambda m: f"conv_block{int(m[1]) + 1}.{m[2]}.conv."),  # BasicConv
        (r"^conv_blocks\.(\d)\.(\d)\.1\.", lambda m: f"conv_block{int(m[1]) + 1}.{m[2]}.bn."),
        (r"^heads\.(\d)\.", lambda m: f"classifier{int(m[1]) + 1}."),
        (r"^head_concat\.", "classifier_concat."),
    ],
    "mmal": [  # MainNet: pretrained_model (torchvision-named ResNet-50), rawcls_net (the shared classifier)
        (r"^backbone\.body\.", "pretrained_model."),
        (r"^classifier\.", "rawcls_net."),
    ],
    "pmg": [  # PMG: features (their whole ResNet), conv_blockN.{0,1}.{conv,bn}, classifierN, classifier_concat
        (r"^backbone\.body\.", "features."),
        (r"^conv_blocks\.(\d)\.(\d)\.0\.", lambda m: f"conv_block{int(m[1]) + 1}.{m[2]}.conv."),
        (r"^conv_blocks\.(\d)\.(\d)\.1\.", lambda m: f"conv_block{int(m[1]) + 1}.{m[2]}.bn."),
        (r"^heads\.(\d)\.", lambda m: f"classifier{int(m[1]) + 1}."),
        (r"^head_concat\.", "classifier_concat."),
    ],
    "cal": [  # WSDAN_CAL: features = Sequential(*resnet.children()[:-2]), attentions (BasicConv2d), fc; the feature
        (r"^backbone\.body\.conv1\.", "features.0."),  # centres are a top-level entry of the file (see below)
        (r"^backbone\.body\.bn1\.", "features.1."),
        (r"^backbone\.body\.layer(\d)\.", lambda m: f"features.{int(m[1]) + 3}."),
        (r"^attentions\.", "attentions."),
        (r"^fc\.", "fc."),
        (r"^feature_center$", "feature_center"),
    ],
}
# tensors the authors' files hold that fgvc has no place for (their ResNet's unused ImageNet fc)
AUTHORS_EXTRA = {"fbsd": {}, "mmal": {"pretrained_model.fc.weight": (1000, 128), "pretrained_model.fc.bias": (1000,)},
                 "pmg": {"features.fc.weight": (1000, 128), "features.fc.bias": (1000,)}, "cal": {}}
METHODS = list(INVERSE)
REPOSITORY = {"fbsd": "chaomaer/FBSD", "mmal": "ZF4444/MMAL-Net",
              "pmg": "PRIS-CV/PMG-Progressive-Multi-Granularity-Training", "cal": "raoyongming/CAL"}


def authors_name(method: str, key: str) -> str:
    for pattern, theirs in INVERSE[method]:
        m = re.match(pattern, key)
        if m:
            return (theirs(m) if callable(theirs) else theirs) + key[m.end():]
    raise AssertionError(f"{method}: no inverse for {key}")


@pytest.fixture
def narrow_backbone(monkeypatch):
    monkeypatch.setitem(BACKBONE_REGISTRY, BACKBONE, BackboneSpec(BACKBONE, lambda pretrained: narrow_resnet()))


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("convert") / "data"
    assert main([*tiny_synth_args(root, per_class=2)]) == 0
    return root


def fgvc_model(method: str, num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(method, num_classes, backbone=BACKBONE, **OPTIONS[method])
    for name, tensor in model.state_dict().items():  # every tensor random, BatchNorm statistics included
        if name.endswith("running_var"):
            tensor.copy_(torch.rand_like(tensor) + 0.5)
        elif tensor.is_floating_point():
            tensor.copy_(torch.randn_like(tensor) * 0.1)
        else:
            tensor.fill_(7)  # num_batches_tracked
    return model


def authors_state(method: str, model: nn.Module) -> dict[str, torch.Tensor]:
    state = {authors_name(method, k): v.clone() for k, v in model.state_dict().items()}
    state.update({k: torch.randn(shape) for k, shape in AUTHORS_EXTRA[method].items()})
    return state


_THROWAWAY = "authors_throwaway_model"


def pickled_module(state: dict[str, torch.Tensor], data_parallel: bool = False) -> nn.Module:
    """An nn.Module tree with exactly ``state`` as its state dict, of a class defined in a throwaway module (so the
    file names ``authors_throwaway_model.Net``, which is not importable when it is read)."""
    mod = types.ModuleType(_THROWAWAY)
    exec("from torch import nn\nclass Net(nn.Module):\n    pass\n", mod.__dict__)  # noqa: S102 - the test's own code
    sys.modules[_THROWAWAY] = mod
    root = mod.Net()
    for key, value in state.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if part not in node._modules:
                node.add_module(part, mod.Net())
            node = node._modules[part]
        if value.is_floating_point() and "running_" not in leaf:
            node.register_parameter(leaf, nn.Parameter(value.clone()))
        else:
            node.register_buffer(leaf, value.clone())
    return nn.DataParallel(root) if data_parallel else root


def save_authors_file(method: str, state: dict[str, torch.Tensor], path: Path, *, data_parallel: bool = False) -> Path:
    if data_parallel and method != "pmg":
        state = {f"module.{k}": v for k, v in state.items()}
    if method == "fbsd":
        torch.save(state, path)
    elif method == "mmal":
        torch.save({"epoch": 146, "model_state_dict": state, "learning_rate": 1e-5}, path)
    elif method == "cal":  # their train.py: the DDP module's state dict, the centres beside it
        center = state.pop("module.feature_center" if data_parallel else "feature_center")
        torch.save({"logs": {"epoch": 80, "val_acc": 0.9}, "state_dict": state, "feature_center": center}, path)
    else:
        try:
            torch.save(pickled_module(state, data_parallel), path)
        finally:
            sys.modules.pop(_THROWAWAY, None)
    return path


def convert_args(method: str, checkpoint: Path, out: Path, data: Path, *extra: str, config: Path | None = None):
    args = ["convert", "--method", method, "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)]
    if config is not None:
        args += ["--config", str(config)]
    sets = [*SETS, *(f"model.options.{k}={v}" for k, v in OPTIONS[method].items())]
    return args + [a for s in sets for a in ("--set", s)] + list(extra)


def pmg_config(tmp_path: Path) -> Path:
    """PMG through --config (a YAML file): its options and the plain recipe."""
    path = tmp_path / "pmg.yaml"
    path.write_text("name: pmg_authors\nmodel:\n  name: pmg\n  transform: fbsd\n", encoding="utf-8")
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fgvc: error: "), err
    return err


# -- the conversion ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_the_authors_checkpoint_becomes_a_run_with_the_same_weights_that_evaluate_reads(
        method, narrow_backbone, synth_data, tmp_path, capsys):
    model = fgvc_model(method)
    checkpoint = save_authors_file(method, authors_state(method, model), tmp_path / "authors.pth",
                                   data_parallel=method != "fbsd")
    out = tmp_path / "run"
    config = pmg_config(tmp_path) if method == "pmg" else None
    assert main(convert_args(method, checkpoint, out, synth_data, config=config)) == 0, capsys.readouterr().err
    assert "converted" in capsys.readouterr().out

    state = load_checkpoint(out / "best.pt")
    expected = model.state_dict()
    assert list(state["model"]) == list(expected)
    for key, value in expected.items():
        assert torch.equal(state["model"][key], value), key
    assert "optimizer" not in state
    converted = state["converted_from"]
    assert converted["file"] == str(checkpoint.resolve()) and len(converted["sha256"]) == 64
    assert converted["repository"] == REPOSITORY[method]
    assert sorted(converted["dropped"]) == sorted(AUTHORS_EXTRA[method])
    if method == "mmal":
        assert converted["entries"] == {"epoch": 146, "learning_rate": 1e-5}
    if method == "cal":
        assert converted["entries"] == {"logs": {"epoch": 80, "val_acc": 0.9}}
    assert state["config"]["model"]["name"] == method and state["config"]["model"]["pretrained"] is False
    assert state["classes"]["ids"] == ["04615", "04616", "04617"]
    assert (out / "config.yaml").is_file() and (out / "classes.json").is_file()

    assert main(["evaluate", str(out), "--data", str(synth_data), "--split", "test", "--device", "cpu",
                 "--no-progress", "--no-report", "--batch-size", "4"]) == 0, capsys.readouterr().err
    assert (out / "eval_test" / "metrics.json").is_file()
    # the checkpoint is named for what it is: converted, not a best validation score
    assert f"converted from {checkpoint.resolve()} ({REPOSITORY[method]})" in capsys.readouterr().out


def test_a_class_list_file_names_the_rows(narrow_backbone, tmp_path, capsys):
    model = fgvc_model("fbsd", num_classes=4)
    checkpoint = save_authors_file("fbsd", authors_state("fbsd", model), tmp_path / "authors.pth")
    names = tmp_path / "classes.txt"
    names.write_text("Black footed Albatross\nLaysan Albatross\n\nSooty Albatross\nGroove billed Ani\n",
                     encoding="utf-8")
    args = convert_args("fbsd", checkpoint, tmp_path / "run", Path("unused"))
    args[args.index("--data"):args.index("--data") + 2] = ["--classes", str(names)]
    assert main(args) == 0, capsys.readouterr().err
    state = load_checkpoint(tmp_path / "run" / "best.pt")
    assert state["classes"]["names"] == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross",
                                         "Groove billed Ani"]


# -- strictness: one line naming the key, the file and the fix -------------------------------------

def _fbsd_file(tmp_path: Path, edit) -> Path:
    state = authors_state("fbsd", fgvc_model("fbsd"))
    edit(state)
    return save_authors_file("fbsd", state, tmp_path / "authors.pth")


def test_a_missing_key_is_one_line_naming_it(narrow_backbone, synth_data, tmp_path, capsys):
    checkpoint = _fbsd_file(tmp_path, lambda s: s.pop("classifier2.1.weight"))
    assert main(convert_args("fbsd", checkpoint, tmp_path / "run", synth_data)) == 2
    err = one_line_error(capsys)
    assert "heads.1.1.weight" in err and str(checkpoint) in err and "not in the file" in err, err
    assert "--set model.backbone" in err, err
    assert not (tmp_path / "run" / "best.pt").exists()


def test_an_extra_key_is_one_line_naming_it(narrow_backbone, synth_data, tmp_path, capsys):
    checkpoint = _fbsd_file(tmp_path, lambda s: s.update({"features.strip4.stripconv.0.weight": torch.zeros(1)}))
    assert main(convert_args("fbsd", checkpoint, tmp_path / "run", synth_data)) == 2
    err = one_line_error(capsys)
    assert "features.strip4.stripconv.0.weight" in err and "no place in fgvc" in err and str(checkpoint) in err, err


def test_a_shape_mismatch_is_one_line_naming_it(narrow_backbone, synth_data, tmp_path, capsys):
    def widen(s):
        s["conv_block1.0.conv.weight"] = torch.zeros(8, 64, 1, 1)

    checkpoint = _fbsd_file(tmp_path, widen)
    assert main(convert_args("fbsd", checkpoint, tmp_path / "run", synth_data)) == 2
    err = one_line_error(capsys)
    assert "conv_block1.0.conv.weight -> conv_blocks.0.0.0.weight (8, 64, 1, 1) in the file, (8, 32, 1, 1)" in err, err


def test_another_class_count_is_one_line_with_both_counts(narrow_backbone, synth_data, tmp_path, capsys):
    checkpoint = save_authors_file("mmal", authors_state("mmal", fgvc_model("mmal", num_classes=5)),
                                   tmp_path / "authors.pth")
    assert main(convert_args("mmal", checkpoint, tmp_path / "run", synth_data)) == 2
    err = one_line_error(capsys)
    assert "classifies 5 classes but the dataset" in err and "has 3" in err and "--classes FILE" in err, err


def test_a_state_dict_where_a_pickled_model_is_expected_is_one_line(narrow_backbone, synth_data, tmp_path, capsys):
    checkpoint = save_authors_file("fbsd", authors_state("fbsd", fgvc_model("fbsd")), tmp_path / "fbsd.pth")
    assert main(convert_args("pmg", checkpoint, tmp_path / "run", synth_data, config=pmg_config(tmp_path))) == 2
    assert "not a pickled model" in one_line_error(capsys)


# -- reading without running ----------------------------------------------------------------------

class _Payload:
    def __init__(self, call, arg) -> None:
        self.call, self.arg = call, arg

    def __reduce__(self):
        return self.call, (self.arg,)


@pytest.mark.parametrize("how", ["os.system", "builtins.exec"])
def test_a_pickle_that_would_run_code_is_refused_naming_the_global(how, narrow_backbone, synth_data, tmp_path,
                                                                      capsys):
    marker = tmp_path / "pwned"
    payload = (_Payload(os.system, f"touch {marker}") if how == "os.system"
               else _Payload(exec, f"open({str(marker)!r}, 'w').close()"))
    checkpoint = tmp_path / "evil.pth"
    torch.save({"classifier1.4.weight": torch.zeros(3, 8), "x": payload}, checkpoint)
    with pytest.raises(RefusedGlobal) as caught:
        restricted_load(checkpoint)
    assert caught.value.global_name.endswith(".system" if how == "os.system" else "builtins.exec")
    assert main(convert_args("fbsd", checkpoint, tmp_path / "run", synth_data)) == 2
    err = one_line_error(capsys)
    assert caught.value.global_name in err and "runs nothing" in err, err
    assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_pickle_that_calls_a_class_is_refused(legacy, tmp_path):
    import subprocess

    marker = tmp_path / "pwned"
    checkpoint = tmp_path / "evil.pth"
    torch.save([_Payload(subprocess.Popen, ["touch", str(marker)])], checkpoint,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(RefusedGlobal) as caught:
        restricted_load(checkpoint)
    assert caught.value.global_name == "subprocess.Popen"
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_a_torchscript_archive_is_not_read(narrow_backbone, synth_data, tmp_path, capsys):
    checkpoint = tmp_path / "scripted.pth"
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), checkpoint)
    assert main(convert_args("fbsd", checkpoint, tmp_path / "run", synth_data)) == 2
    assert "is a TorchScript archive" in one_line_error(capsys)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_pickled_module_of_a_class_that_cannot_be_imported_gives_its_exact_state_dict(legacy, tmp_path):
    mod = types.ModuleType("authors_throwaway_net")
    exec(  # noqa: S102 - the test's own model, in a module that is gone when the file is read
        "import torch\nfrom torch import nn\n"
        "class Block(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 4, 3)\n"
        "        self.bn = nn.BatchNorm2d(4)\n"
        "        self.register_buffer('scratch', torch.zeros(2), persistent=False)\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.features = nn.Sequential(Block(), nn.ReLU(), nn.Identity())\n"
        "        self.head = nn.Linear(4, 2)\n"
        "        self.register_buffer('center', torch.randn(2, 4))\n"
        "        self.unused = None\n", mod.__dict__)
    sys.modules[mod.__name__] = mod
    try:
        net = mod.Net()
        net.features[0].bn.running_mean.normal_()
        with warnings.catch_warnings():  # legacy: "couldn't retrieve source code for container"
            warnings.simplefilter("ignore")
            torch.save(net, tmp_path / "net.pth", _use_new_zipfile_serialization=not legacy)
    finally:
        del sys.modules[mod.__name__]
    with pytest.raises(ModuleNotFoundError):
        torch.load(tmp_path / "net.pth", weights_only=False)  # the class really cannot be imported
    recovered = module_state_dict(restricted_load(tmp_path / "net.pth"))
    expected = net.state_dict()
    assert list(recovered) == list(expected)
    for key, value in expected.items():
        assert torch.equal(recovered[key], value), key


def test_pickle_module_protocols_all_read(tmp_path):
    """The allow-listed containers at every pickle protocol torch.save can write."""
    for protocol in (2, 3, 4, 5):
        path = tmp_path / f"p{protocol}.pth"
        value = {"a": torch.arange(3), "b": [1, 2.5, "x", None], "c": {1, 2}, "d": torch.Size([2, 3])}
        torch.save(value, path, pickle_protocol=protocol)
        loaded = restricted_load(path)
        assert torch.equal(loaded["a"], value["a"]) and loaded["b"] == value["b"] and loaded["c"] == {1, 2}
        assert loaded["d"] == torch.Size([2, 3])
