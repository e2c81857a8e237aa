"""Training, resuming, transferring, evaluating and predicting on tiny synthetic data."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fgvc.competition.submission import load_submission, read_labels_csv, score_submission
from fgvc.data.classes import ClassTable
from fgvc.data.decode import ImageDecodeError
from fgvc.engine.checkpoint import CheckpointError, load_checkpoint
from fgvc.engine.ensemble import Ensemble
from fgvc.engine.evaluate import evaluate_checkpoint
from fgvc.engine.predict import collect_test_images, predict_ensemble, write_predictions
from fgvc.engine.run import Run
from fgvc.engine.tracking import read_metrics_csv
from fgvc.engine.trainer import Trainer, train
from fgvc.errors import FgvcError, UserError
from tests.engine.conftest import start_trainer, tiny_config
from tests.tiny import tiny_train_args


def _weights(path):
    return load_checkpoint(path)["model"]


def test_two_epochs_equal_one_plus_resume_plus_one(tiny_data, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_config(tiny_data), straight, progress=False)
    start_trainer(tiny_config(tiny_data), split, progress=False).fit(max_epochs=1)
    assert load_checkpoint(split / "last.pt")["epoch"] == 1
    Trainer(Run.resume(split), progress=False).fit()
    a, b = _weights(straight / "last.pt"), _weights(split / "last.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = read_metrics_csv(split / "metrics.csv")
    assert [r["step"] for r in rows] == [1.0, 2.0]


def test_run_directory_contents_and_checkpoint_content(tiny_data, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_data, **{"train.save_every": 1, "train.keep": 1}), run, progress=False)
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "classes.json", "split.json", "metrics.csv",
                                               "last.pt", "best.pt", "epoch_0002.pt"}
    assert not (run / "epoch_0001.pt").exists()  # keep=1
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["classes"]["ids"] == ClassTable.load(run / "classes.json").to_dict()["ids"]
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "rng", "config", "val_ids", "metrics"}
    assert json.loads((run / "split.json").read_text())["val"] == sorted(state["val_ids"])


def test_corrupt_checkpoint_is_one_clear_error(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="damaged or not a checkpoint"):
        load_checkpoint(bad)


def test_transfer_to_a_dataset_with_other_classes(tiny_data, other_data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fgvc.engine")
    source = tmp_path / "source"
    train(tiny_config(tiny_data, **{"train.epochs": 1}), source, progress=False)
    target = tmp_path / "target"
    trainer = start_trainer(tiny_config(other_data, **{"train.epochs": 1}), target, init_from=source / "last.pt",
                      progress=False)
    report = trainer.transfer_report
    assert f"init from {source / 'last.pt'}: " in caplog.text
    assert report.reinitialised == ["classifier.bias", "classifier.weight"] or set(report.reinitialised) == {
        "classifier.weight", "classifier.bias"}
    src = _weights(source / "last.pt")
    assert torch.equal(trainer.model.state_dict()["backbone.body.layer4.1.conv2.weight"],
                       src["backbone.body.layer4.1.conv2.weight"])
    assert trainer.model.classifier.out_features == 4
    trainer.fit()
    assert load_checkpoint(target / "last.pt")["classes"]["ids"] == list(trainer.classes.ids)


def test_transfer_from_another_backbone_is_refused(tiny_data, tmp_path):
    source = tmp_path / "source"
    train(tiny_config(tiny_data, **{"train.epochs": 1}), source, progress=False)
    with pytest.raises(CheckpointError, match="does not fit this model outside the classifier heads"):
        start_trainer(tiny_config(tiny_data, **{"model.backbone": "resnet34"}), tmp_path / "t", init_from=source,
                progress=False)


def test_evaluate_predict_and_score(tiny_data, other_data, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_data), run, progress=False)
    report = evaluate_checkpoint(run, tiny_data, "val", progress=False, device="cpu")
    m = report.metrics
    assert m["images"] == len(load_checkpoint(run / "best.pt")["val_ids"])
    assert sum(sum(r) for r in m["confusion"]) == m["images"]
    assert m["top1"] == pytest.approx(sum(r[i] for i, r in enumerate(m["confusion"])) / m["images"])  # the diagonal
    assert json.loads(report.json_path.read_text())["top1"] == m["top1"]
    test = evaluate_checkpoint(run, tiny_data, "test", progress=False, device="cpu")
    assert test.metrics["images"] == 6

    loaded = Ensemble.open([run], device="cpu")  # what `fgvc predict RUN` opens
    rows = predict_ensemble(loaded, collect_test_images(tiny_data, loaded.reference), batch_size=4, progress=False)
    csv_path, json_path = write_predictions(tmp_path / "pred", rows, "duck_duck_goose")
    submission = load_submission(json_path)
    assert submission["groupname"] == "duck_duck_goose"
    assert set(submission["images"]) == {p.name for p in (tiny_data / "test").iterdir()}
    assert set(submission["images"].values()) <= set(loaded.classes.ids)
    assert all(v.startswith("0") for v in submission["images"].values())  # IDs as spelled
    score = score_submission(submission, read_labels_csv(tiny_data / "test_labels.csv"),
                             class_ids=loaded.classes.ids)
    assert score.accuracy == pytest.approx(test.metrics["top1"])
    assert csv_path.read_text().splitlines()[0] == "file,class_id,class_name,confidence,top5"

    with pytest.raises(FgvcError, match="trained on other classes"):
        evaluate_checkpoint(run, other_data, "val", progress=False, device="cpu")


def test_missing_cuda_is_a_clear_error(tiny_data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(FgvcError, match="CUDA is not available"):
        start_trainer(tiny_config(tiny_data, **{"train.device": "cuda"}), tmp_path / "r", progress=False)


def _train_cli(data, out, extra=()):
    return [sys.executable, "-m", "fgvc", *tiny_train_args(data, out, *extra, report=True, sets={
        "train.batch_size": 2, "train.epochs": 3, "optim.name": "sgd"})]


def test_sigkill_mid_epoch_then_resume(tiny_data, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cli(tiny_data, run), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while not (run / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert (run / "last.pt").exists(), proc.communicate()[0].decode()[-2000:]
    # a real SIGKILL wherever the run is now (the exact write points are covered in test_faults.py)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert load_checkpoint(run / "last.pt")["epoch"] >= 1  # the file is whole: atomic writes
    result = subprocess.run([sys.executable, "-m", "fgvc", "train", "--resume", str(run), "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    assert [r["step"] for r in read_metrics_csv(run / "metrics.csv")] == [1.0, 2.0, 3.0]


def test_sigint_saves_mid_epoch_and_exits_130(tiny_data, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_train_cli(tiny_data, run), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 240
    while not (run / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, out  # saved, but not finished: `train && predict` must stop here
    state = load_checkpoint(run / "last.pt")
    assert "stopped in epoch" in out and "--resume" in out  # interrupted mid-epoch: position saved
    assert state["step_in_epoch"] > 0
    result = subprocess.run([sys.executable, "-m", "fgvc", "train", "--resume", str(run), "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert load_checkpoint(run / "last.pt")["epoch"] == 3


@pytest.mark.parametrize("model", ["mmal", "fbsd"])
def test_fgvc_models_train_and_evaluate_through_the_workflow(tiny_data, tmp_path, model):
    run = tmp_path / model
    overrides = {"model.name": model, "train.epochs": 2, "model.transform": "mmal" if model == "mmal" else "fbsd"}
    if model == "fbsd":
        overrides["optim.backbone_lr"] = 0.001
    train(tiny_config(tiny_data, **overrides), run, progress=False)
    rows = read_metrics_csv(run / "metrics.csv")
    assert len(rows) == 2
    report = evaluate_checkpoint(run, tiny_data, "test", progress=False, device="cpu")
    m = report.metrics
    if model == "mmal":
        assert {"acc_raw", "acc_object", "localisation_accuracy"} <= set(m)
        assert "train/aolm_fallbacks" in rows[0]
    else:
        assert {"acc_part1", "acc_part2", "acc_part3", "acc_concat"} <= set(m)
        assert "lr/backbone" in rows[0] and rows[0]["lr/backbone"] < rows[0]["lr/new"]


def test_channels_last_computes_the_same_outputs_and_gradients(tiny_data, tmp_path):
    # What train.channels_last promises: the same function of the same weights, computed by other
    # convolution kernels, so the same forward output and the same gradients of one step within fp32
    # rounding. Not the weights after an epoch: which kernels run depends on the CPU (AVX2, AVX-512)
    # and SGD amplifies their rounding step after step (0.6% here, 5.6% on a Xeon).
    #
    # Tolerance: a kernel that sums a conv's K = C_in*kh*kw products in another order changes the
    # result by about sqrt(K)*eps relative to the size of the terms (rounding errors add like a random
    # walk); over L layers the errors add the same way, sqrt(L*K)*eps relative to the output's size,
    # hence atol scaled by max|output|. The backward pass runs the chain again (2L reductions; its
    # weight-gradient sums over N*H*W are no longer than K here). Factor 4: train-mode BatchNorm of
    # layer4 sees 16 values per channel and amplifies errors by dividing by their small spread.
    # resnet18 at 64 px: K=4608, L=20 -> 1.4e-4 forward, 2.0e-4 gradients; measured 5e-6 and 1.4e-5
    # (also with 1 thread and with oneDNN off). A layout bug (a view of channels_last memory read as
    # NCHW) is off by O(1).
    import copy

    trainer = start_trainer(tiny_config(tiny_data, **{"train.channels_last": True}), tmp_path / "cl", progress=False)
    model = trainer.model
    assert model.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    assert not plain.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    batch = next(iter(trainer.train_loader))
    x, y = trainer.train_loader.prepare(batch["image"]), batch["label"]
    _assert_same_step(plain, plain, model, model, x.contiguous(), x.contiguous(memory_format=torch.channels_last), y)


def _one_step(model, forward, inputs, y):
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout mask, if the model has one
    out = forward(inputs)
    loss, _ = model.loss(out, y, epoch=0)
    loss.backward()
    return out.logits.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _assert_same_step(model_a, forward_a, model_b, forward_b, x_a, x_b, y):
    """One training step of two computations of the same function: same logits and gradients within
    the rounding bound derived in test_channels_last_computes_the_same_outputs_and_gradients."""
    import math

    logits, grads = _one_step(model_a, forward_a, x_a, y)
    logits_b, grads_b = _one_step(model_b, forward_b, x_b, y)
    convs = [m for m in model_a.modules() if isinstance(m, torch.nn.Conv2d)]
    k = max(c.in_channels // c.groups * math.prod(c.kernel_size) for c in convs)
    eps = torch.finfo(torch.float32).eps
    forward_tol = 4 * math.sqrt(len(convs) * k) * eps
    gradient_tol = 4 * math.sqrt(2 * len(convs) * k) * eps
    assert 1e-5 < forward_tol < gradient_tol < 1e-3  # the derivation above, for this model
    torch.testing.assert_close(logits_b, logits, rtol=0, atol=forward_tol * float(logits.abs().max()))
    assert grads_b.keys() == grads.keys() and len(grads) == len(list(model_a.parameters()))
    for key, g in grads.items():
        torch.testing.assert_close(grads_b[key], g, rtol=0, atol=gradient_tol * float(g.abs().max()),
                                   msg=lambda m, key=key: f"{key}: {m}")


@pytest.mark.slow
def test_compiled_training_computes_the_same_outputs_and_gradients(tiny_data, tmp_path):
    # Inductor's fused kernels round differently from eager ones, and SGD amplifies that over steps;
    # what torch.compile promises is the same function: one step's logits and gradients (bound derived
    # in the channels_last test). Checkpoints keep plain parameter names (no "_orig_mod.").
    import copy

    trainer = start_trainer(tiny_config(tiny_data, **{"train.compile": True}), tmp_path / "compiled", progress=False)
    eager = copy.deepcopy(trainer.model)
    batch = next(iter(trainer.train_loader))
    x, y = trainer.train_loader.prepare(batch["image"]), batch["label"]
    _assert_same_step(eager, eager, trainer.model, trainer.train_forward, x, x, y)
    assert trainer._state()["model"].keys() == eager.state_dict().keys()


def test_gradient_accumulation_steps_the_optimiser_every_k_batches(tiny_data, tmp_path):
    config = tiny_config(tiny_data, **{"train.accumulate": 3, "train.epochs": 1, "train.drop_last": False})
    trainer = start_trainer(config, tmp_path / "acc", progress=False)
    batches = len(trainer.train_loader)
    trainer.fit()
    assert trainer.steps_per_epoch == -(-batches // 3)
    assert trainer.scheduler.last_epoch == trainer.steps_per_epoch  # one scheduler step per optimiser step


def test_out_of_memory_says_which_knob_to_turn(tiny_data, tmp_path, monkeypatch):
    trainer = start_trainer(tiny_config(tiny_data, **{"train.epochs": 1}), tmp_path / "oom", progress=False)

    def explode(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer.model, "forward", explode)
    with pytest.raises(UserError) as e:
        trainer.fit()
    assert "train.batch_size" in str(e.value) and "train.accumulate" in str(e.value)


def test_unreadable_training_image_names_the_file_or_is_skipped_and_counted(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    victim = sorted((data / "train").rglob("*.jpg"))[0]
    victim.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=str(victim.name)):
        train(tiny_config(data, **{"train.epochs": 1, "data.val_fraction": 0.0}), tmp_path / "strict",
              progress=False)
    train(tiny_config(data, **{"train.epochs": 1, "data.val_fraction": 0.0, "data.skip_unreadable": True}),
          tmp_path / "skip", progress=False)
    assert read_metrics_csv(tmp_path / "skip" / "metrics.csv")[0]["train/skipped_images"] == 1.0


@pytest.mark.parametrize("clip", [None, 0.05])
def test_clip_grad_norm_bounds_the_step_by_the_clipped_norm(tiny_data, tmp_path, clip):
    """Plain SGD (no momentum, no weight decay): the step is lr times the gradient, so its norm is lr times the
    gradient's norm — at most lr * clip_grad_norm when clipping (TransFG's 1.0), larger here without."""
    overrides = {"optim.momentum": 0, "optim.weight_decay": 0, "optim.lr": 0.1, "schedule.name": "constant"}
    if clip is not None:
        overrides["optim.clip_grad_norm"] = clip
    trainer = start_trainer(tiny_config(tiny_data, **overrides), tmp_path / "run", progress=False)
    batch = next(iter(trainer.train_loader))
    x = trainer.train_loader.prepare(batch["image"])
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.model.train()
    trainer._run_passes(x, batch["label"], True)
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(trainer.model.parameters(), before,
                                                                        strict=True)))
    if clip is None:
        assert step > 0.1 * 0.05 * 2  # an unclipped gradient of this tiny run is far above the clip used below
    else:
        assert step <= 0.1 * clip * (1 + 1e-5)  # float32 rounding of the clip coefficient
