import copy
import math

import pytest
import torch

from fgvc.config import ConfigError, OptimConfig, ScheduleConfig, load_config
from fgvc.engine.optim import build_optimizer, lr_factor
from fgvc.models import create_model, model_spec


def test_reference_fbsd_schedule_is_periodic_as_measured():
    """REFERENCE §1.5 table: lr_new after n scheduler steps (stepped before each optimizer step)."""
    f = lr_factor(ScheduleConfig(name="cosine", reference_per_batch=True), epochs=200, steps_per_epoch=300)
    table = {1: 0.00199988, 100: 0.001, 200: 0.0, 300: 0.001, 400: 0.002, 600: 0.0, 800: 0.002, 1200: 0.002}
    for n, lr in table.items():
        assert 0.002 * f(n - 1) == pytest.approx(lr, abs=1e-8), n


def test_cosine_anneals_over_the_whole_run_with_warmup():
    f = lr_factor(ScheduleConfig(name="cosine", warmup_epochs=1), epochs=10, steps_per_epoch=5)
    values = [f(i) for i in range(50)]
    assert values[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(a >= b for a, b in zip(values[4:], values[5:], strict=False))
    assert values[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 44 / 45)))


def test_multistep_at_epoch_granularity_like_mmal():
    f = lr_factor(ScheduleConfig(name="multistep", milestones=[60, 100], gamma=0.1), epochs=200, steps_per_epoch=7)
    assert f(59 * 7 + 6) == 1.0 and f(60 * 7) == pytest.approx(0.1) and f(100 * 7) == pytest.approx(0.01)


def test_fbsd_gets_two_parameter_groups():
    model = create_model("fbsd", 3, backbone="resnet18")
    config = load_config("fbsd_resnet50_cub")
    opt = build_optimizer(model, config.optim, model_spec("fbsd").param_groups)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"new": 0.002, "backbone": 0.0002}
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 0.0005


@pytest.mark.parametrize("name", ["mmal", "baseline"])
def test_backbone_lr_splits_every_model_at_its_backbone(name):
    model = create_model(name, 3, backbone="resnet18")
    config = load_config("demo", ["optim.lr=0.02", "optim.backbone_lr=0.005"])
    opt = build_optimizer(model, config.optim, model_spec(name).param_groups)
    groups = {g["name"]: g for g in opt.param_groups}
    assert {n: g["lr"] for n, g in groups.items()} == {"new": 0.02, "backbone": 0.005}
    backbone = {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in groups["backbone"]["params"]} == backbone
    assert {id(p) for p in groups["new"]["params"]} == {id(p) for p in model.parameters()} - backbone
    assert {id(p) for p in model.classifier.parameters()} <= {id(p) for p in groups["new"]["params"]}


def test_presets_load_and_overrides_apply():
    config = load_config("mmal_resnet50_competition", ["optim.lr=0.01", "model.options.windows=cub",
                                                        "schedule.milestones=[10, 20]"])
    assert config.optim.lr == 0.01 and config.model.options["windows"] == "cub"
    assert config.schedule.milestones == [10, 20] and config.train.batch_size == 6
    assert config.model.options["dropout"] == 0.5  # untouched options stay


def test_unknown_keys_and_presets_suggest_the_closest():
    with pytest.raises(ConfigError, match="unknown config key 'optim.lrr'. Did you mean 'optim.lr'"):
        load_config("demo", ["optim.lrr=0.1"])
    with pytest.raises(ConfigError, match="Did you mean 'mmal_resnet50_cub'"):
        load_config("mmal_resnet50_cbu")
    with pytest.raises(ConfigError, match="'train.epochs' should be int"):
        load_config("demo", ["train.epochs=ten"])
    with pytest.raises(ConfigError, match="should look like section.key=value"):
        load_config("demo", ["train.epochs"])


def test_yaml_file_path_works(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  name: fbsd\ntrain:\n  epochs: 3\n")
    config = load_config(path)
    assert config.model.name == "fbsd" and config.train.epochs == 3 and config.optim.lr == 0.01


def test_text_fields_take_yaml_keywords_as_typed(tmp_path):
    # YAML reads `off` as False; on the command line a text field keeps the word
    assert load_config("demo", ["train.amp=off"]).train.amp == "off"
    assert load_config("demo", ["train.amp=bf16", "train.epochs=3"]).train.epochs == 3
    with pytest.raises(ConfigError, match=r"'train.epochs' should be int, got 1.5$"):  # not retried as text
        load_config("demo", ["train.epochs=1.5"])
    path = tmp_path / "amp.yaml"
    path.write_text("train:\n  amp: off\n")
    with pytest.raises(ConfigError, match=r"'train.amp' should be str, got False \(YAML reads off/on/yes/no"):
        load_config(path)


@pytest.mark.parametrize("native", [True, False])
def test_amp_fast_is_bf16_only_on_a_cpu_that_computes_it_natively(monkeypatch, native):
    """`fast` takes bf16 on a CPU exactly when it has AVX512-BF16 or AMX (emulated bf16 is slower than
    fp32); `auto` stays fp32 on any CPU; the explicit values ignore the CPU."""
    import torch

    from fgvc.engine import run

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu = torch.device("cpu")
    assert run.resolve_amp("fast", cpu) is (torch.bfloat16 if native else None)
    assert run.resolve_amp("auto", cpu) is None and run.resolve_amp("off", cpu) is None
    assert run.resolve_amp("bf16", cpu) is torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native)
    assert run.resolve_amp("fast", cpu) is (torch.bfloat16 if native else None)
    with pytest.raises(ConfigError, match="auto, fast, off, bf16 or fp16"):
        run.resolve_amp("fastest", cpu)


def test_per_epoch_cosine_equals_the_progressive_multi_granularity_code():
    """PMG's utils.cosine_anneal_schedule(epoch, 200, lr) = lr / 2 * (cos(pi * epoch / 200) + 1), set before
    every batch of the epoch: the rate of every step of epoch e is that, for both parameter groups."""
    config = load_config("pmg_resnet50_cub")
    spe = 7
    f = lr_factor(config.schedule, config.train.epochs, spe)
    for it in range(config.train.epochs * spe):
        epoch = it // spe
        for base in (config.optim.lr, config.optim.backbone_lr):
            assert base * f(it) == pytest.approx(base / 2 * (math.cos(math.pi * epoch / 200) + 1), abs=1e-15), it
    assert f(0) == f(spe - 1) == 1.0 and f(spe) < 1.0  # constant within an epoch
    per_step = lr_factor(ScheduleConfig(name="cosine"), 200, spe)  # the plain cosine differs inside the epoch
    assert per_step(spe * 100) == pytest.approx(f(spe * 100)) and per_step(spe * 100 + 3) < f(spe * 100 + 3)


def test_exponential_schedule_equals_the_counterfactual_attention_code():
    """CAL's adjust_learning(optimizer, epoch, i / len(loader)) before iteration i:
    1e-3 * 0.9 ** ((epoch + i / len) / 2)."""
    config = load_config("cal_resnet101_cub")
    assert (config.schedule.name, config.schedule.gamma, config.schedule.period_epochs) == ("exponential", 0.9, 2.0)
    spe = 11
    f = lr_factor(config.schedule, config.train.epochs, spe)
    for it in range(config.train.epochs * spe):
        epoch, i = divmod(it, spe)
        assert 1e-3 * f(it) == pytest.approx(1e-3 * pow(0.9, (epoch + float(i) / spe) / 2.0), rel=1e-12), it
    assert f(0) == 1.0 and f(2 * spe) == pytest.approx(0.9) and f(160 * spe - 1) < f(159 * spe)


def test_exponential_per_epoch_and_with_warmup():
    f = lr_factor(ScheduleConfig(name="exponential", gamma=0.5, period_epochs=1, per_epoch=True), 10, 4)
    assert [f(i) for i in range(9)] == pytest.approx([1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25])
    f = lr_factor(ScheduleConfig(name="exponential", gamma=0.5, warmup_epochs=1), 10, 4)
    assert [f(i) for i in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 0.5 ** 0.25])


def test_schedule_settings_are_checked():
    with pytest.raises(ConfigError, match=r"schedule.period_epochs = 0.0 is out of range: it must be greater than 0"):
        load_config("cal_resnet101_cub", ["schedule.period_epochs=0"])
    with pytest.raises(ConfigError, match="per_epoch and schedule.reference_per_batch contradict"):
        load_config("pmg_resnet50_cub", ["schedule.reference_per_batch=true"])
    with pytest.raises(ConfigError, match="choose one of cosine, multistep, exponential, constant"):
        load_config("demo", ["schedule.name=exp"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_is_fused_and_gives_the_loops_values_to_rounding(dtype, nesterov):
    """fgvc's SGD takes the fused kernel on the CPU; five steps with weight decay and momentum (a layer whose first
    gradient comes a step later, and without a gradient in another step, as in PMG's passes) give the per-tensor
    loop's parameters up to rounding: the kernel may fuse a multiply and an add (one rounding instead of two), at
    most an ulp of the update per step, which momentum carries into later steps — bounded by 16 ulps of the
    largest weight."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(37, 19), torch.nn.ReLU(), torch.nn.Linear(19, 5)).to(dtype)
    twin = copy.deepcopy(model)
    cfg = OptimConfig(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    fused = build_optimizer(model, cfg)
    assert fused.param_groups[0]["fused"] is True and isinstance(fused, torch.optim.SGD)
    loop = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov,
                           foreach=False)
    before = [q.detach().clone() for q in model.parameters()]
    for step in range(5):
        for net, opt in ((model, fused), (twin, loop)):
            opt.zero_grad(set_to_none=True)
            x = torch.randn(8, 37, dtype=dtype, generator=torch.Generator().manual_seed(step))
            # the last layer's first gradient comes in step 1 (PMG's heads: the first pass trains one), and it gets
            # none in step 3
            out = net[:2](x) if step in (0, 3) else net(x)
            out.square().mean().backward()
            opt.step()
        if step == 1:  # the last layer's first step gave it a buffer: the loop's first-step buffer, its gradient
            assert fused.state[model[2].weight]["momentum_buffer"] is not None
    for a, b, start in zip(model.parameters(), twin.parameters(), before, strict=True):
        bound = 16 * torch.finfo(dtype).eps * max(1.0, b.abs().max().item())
        torch.testing.assert_close(a, b, rtol=0, atol=bound)
        assert (a - start).abs().max() > 1000 * bound  # every tensor moved, far beyond the bound


def test_fused_sgd_takes_over_a_loop_sgd_checkpoint_and_steps_under_a_grad_scaler():
    """Resuming a run saved by the per-tensor loop: the saved groups (``fused`` None) must not turn fgvc's SGD back
    into the loop — under a GradScaler, which hands a fused optimiser its scale, that would fail. Two scaled steps
    then give the loop's parameters (the scale is a power of two: unscaling is exact) up to the kernel's rounding."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(11, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    twin = copy.deepcopy(model)
    loop = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, foreach=False)
    x = torch.randn(6, 11)
    twin(x).square().mean().backward()
    loop.step()
    model.load_state_dict(twin.state_dict())
    fused = build_optimizer(model, OptimConfig(name="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4))
    fused.load_state_dict(copy.deepcopy(loop.state_dict()))  # as read from a file: not the loop's own buffers
    assert all(group["fused"] is True for group in fused.param_groups)
    for net, opt in ((model, fused), (twin, loop)):
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
        for _ in range(2):
            opt.zero_grad(set_to_none=True)
            scaler.scale(net(x).square().mean()).backward()
            scaler.step(opt)
            scaler.update()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=16 * torch.finfo(torch.float32).eps * b.abs().max().item())


def test_fused_sgd_takes_a_momentum_buffer_saved_in_another_memory_layout():
    """The CPU kernel indexes parameter, gradient and buffer by one offset: an NCHW buffer (a checkpoint of an NCHW
    run) for a channels_last weight is copied into the weight's layout first, so the step is the loop's."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    twin = copy.deepcopy(conv)
    fused = build_optimizer(conv, OptimConfig(name="sgd", lr=0.1, momentum=0.9, weight_decay=0.0))
    loop = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, foreach=False)
    for p, q in zip(conv.parameters(), twin.parameters(), strict=True):
        buffer, grad = torch.randn(p.shape), torch.randn(p.shape)  # the buffer NCHW-contiguous
        fused.state[p]["momentum_buffer"], loop.state[q]["momentum_buffer"] = buffer.clone(), buffer.clone()
        p.grad = grad.clone().contiguous(memory_format=torch.channels_last) if p.dim() == 4 else grad.clone()
        q.grad = p.grad.clone()
    assert not fused.state[conv.weight]["momentum_buffer"].is_contiguous(memory_format=torch.channels_last)
    fused.step()
    loop.step()
    for p, q in zip(conv.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=16 * torch.finfo(torch.float32).eps * q.abs().max().item())
