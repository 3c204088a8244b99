"""BatchNorm statistics per time step (``model.bn_stats=per_step``), the BatchNorm fit check, and
evaluation without a trainer (``bsnn.evaluate``, ``bsnn eval``)."""
import shutil

import pytest
import torch
from spikingjelly.activation_based import functional
from torch import nn

import bsnn
from bsnn import models
from bsnn.cli import main
from bsnn.config import resolve
from bsnn.data import make_loader
from bsnn.nn import StepBatchNorm, per_step_batchnorm
from bsnn.recipes import load_recipe
from bsnn.train import build_data, build_trainer
from bsnn.train.build import build_method


def step_bns(model):
    return [m for m in model.modules() if isinstance(m, StepBatchNorm)]


def test_each_step_has_its_own_statistics_and_reset_restarts_the_count():
    bn = StepBatchNorm(3, time_steps=2, momentum=1.0)          # momentum 1: the statistics of the last batch
    xs = [torch.randn(16, 3) * s + m for s, m in ((1.0, 0.0), (3.0, 5.0), (0.5, -2.0))]
    for x in xs:
        bn(x)
    assert torch.allclose(bn.running_mean[0], xs[0].mean(0), atol=1e-6)
    assert torch.allclose(bn.running_mean[1], xs[2].mean(0), atol=1e-6)   # steps past T use the last row
    assert torch.allclose(bn.running_var[1], xs[2].var(0), atol=1e-5)
    functional.reset_net(bn)
    bn.eval()
    y0 = bn(xs[1])
    expected = (xs[1] - bn.running_mean[0]) / torch.sqrt(bn.running_var[0] + bn.eps)
    assert torch.allclose(y0, expected * bn.weight + bn.bias, atol=1e-5)


def test_multi_step_equals_the_single_step_loop():
    single = StepBatchNorm(4, time_steps=3)
    multi = StepBatchNorm(4, time_steps=3, step_mode="m")
    x = torch.randn(3, 8, 4, 5, 5) * torch.tensor([1.0, 4.0, 0.1]).view(3, 1, 1, 1, 1)
    y_single = torch.stack([single(x[t]) for t in range(3)])
    assert torch.allclose(multi(x), y_single, atol=1e-6)
    assert torch.equal(multi.running_mean, single.running_mean) and torch.equal(multi.running_var, single.running_var)


@pytest.mark.parametrize("name, method", [("mlp", "online"), ("convnet", "bptt"), ("vgg11", "online"),
                                          ("resnet18", "online"), ("resnet19", "bptt"), ("sei_resnet_tiny", "bptt"),
                                          ("sei_qkformer_tiny", "bptt")])
def test_every_batchnorm_of_every_model_gets_per_step_statistics(name, method):
    kw = {"num_classes": 10, "in_channels": 3} if name != "mlp" else {"in_features": 64}
    shared = models.create(name, method=method, time_steps=3, **kw)
    model = models.create(name, method=method, time_steps=3, bn_stats="per_step", **kw)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert bns and all(isinstance(m, StepBatchNorm) and m.time_steps == 3 for m in bns)
    assert {m.step_mode for m in bns} == {"s" if method == "online" else "m"}
    # the same parameters (model size unchanged): only buffers grow
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in shared.named_parameters()]


def test_a_model_with_per_step_statistics_runs_both_step_modes():
    model = models.create("convnet", method="bptt", time_steps=2, bn_stats="per_step", channels=(4, 8))
    x = torch.rand(2, 3, 1, 28, 28)
    model.train()
    assert model(x).shape == (2, 3, 10)
    functional.reset_net(model)


def test_fewer_or_shared_statistics_fill_the_new_steps_on_load():
    """The T=1 -> T=4 phase change: new steps start from the last known one; a shared model's
    statistics go to every step."""
    one = models.create("mlp", in_features=64, hidden=(8,), time_steps=1, bn_stats="per_step")
    for bn in step_bns(one):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    four = models.create("mlp", in_features=64, hidden=(8,), time_steps=4, bn_stats="per_step")
    four.load_state_dict(one.state_dict())
    for a, b in zip(step_bns(one), step_bns(four)):
        assert torch.equal(b.running_mean, a.running_mean.expand(4, -1))
        assert torch.equal(b.running_var, a.running_var.expand(4, -1))
    shared = models.create("mlp", in_features=64, hidden=(8,), time_steps=4, bn_stats="shared")
    four.load_state_dict(shared.state_dict())
    bn = next(m for m in shared.modules() if isinstance(m, nn.BatchNorm1d))
    assert torch.equal(step_bns(four)[0].running_mean, bn.running_mean.expand(4, -1))


def test_per_step_conversion_keeps_the_parameters_and_statistics():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6))
    model[1].running_mean.normal_()
    mean, weight = model[1].running_mean.clone(), model[1].weight
    per_step_batchnorm(model, 5)
    assert isinstance(model[1], StepBatchNorm) and model[1].weight is weight and model[1].time_steps == 5
    assert torch.equal(model[1].running_mean, mean.expand(5, -1))


def test_auto_is_per_step_for_online_training_with_several_steps_only():
    def kinds(**kw):
        return {type(m).__name__ for m in models.create("mlp", in_features=64, hidden=(8,), **kw).modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert kinds(time_steps=4) == {"StepBatchNorm"}
    assert kinds(time_steps=1) == {"BatchNorm1d"}                 # one step: nothing to keep apart
    assert kinds(time_steps=4, method="bptt") == {"BatchNorm1d"}
    assert kinds(time_steps=1, bn_stats="per_step") == {"StepBatchNorm"}


def test_checkpoints_from_before_bn_stats_keep_shared_statistics(tmp_path):
    from bsnn.train import checkpoint as ckpt

    assert _cli(tmp_path, "r", "model.bn_stats=auto") == 0
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    del state["data_info"], state["config"]["model"]["bn_stats"]      # as written by the previous version
    torch.save(state, tmp_path / "old.pt")
    assert ckpt.load_run(tmp_path / "old.pt")["config"]["model"]["bn_stats"] == "shared"
    assert ckpt.load_run(tmp_path / "r" / "checkpoint.pt")["config"]["model"]["bn_stats"] == "auto"


def test_sync_bn_needs_shared_statistics(capsys):
    from bsnn.errors import ConfigError

    for sets in (["train.sync_bn=true"], ["train.sync_bn=true", "method.name=bptt", "optim.name=adam",
                                          "model.bn_stats=per_step"]):
        with pytest.raises(ConfigError, match="sync_bn"):
            resolve(load_recipe("digits_tbso"), sets)
    resolve(load_recipe("digits_tbso"), ["train.sync_bn=true", "model.bn_stats=shared"])


def test_evaluate_skips_the_batchnorm_check_on_a_one_sample_batch():
    from bsnn.data import TensorPairs
    from bsnn.train import OnlineMethod

    model = models.create("mlp", in_features=64, hidden=(8,))
    x, y = torch.rand(5, 1, 8, 8), torch.randint(0, 10, (5,))
    res = bsnn.evaluate(model, make_loader(TensorPairs(x, y), 4, shuffle=False), OnlineMethod(2))
    assert res.samples == 5 and res.bn_samples == 4


def _cli(tmp_path, name, *sets, epochs=1):
    sets = ("model.bn_stats=per_step", *sets)
    return main(["train", "--recipe", "digits_tbso", "--out", str(tmp_path / name), "--set", "train.progress=false",
                 "--set", "model.hidden=[32,32]", "--set", f"train.epochs={epochs}", "--set", "train.limit_batches=4",
                 *[a for s in sets for a in ("--set", s)]])


def test_per_step_statistics_carry_over_a_phase_change(tmp_path):
    """Phase 1 at T=1, phase 2 at T=4 from it (``train.init_from``); resume: test_training.py."""
    assert _cli(tmp_path, "t1", "method.time_steps=1") == 0
    t1 = torch.load(tmp_path / "t1" / "checkpoint.pt", weights_only=True)["model"]
    stats = [k for k in t1 if k.endswith("running_mean")]
    assert stats and all(t1[k].shape[0] == 1 for k in stats)
    assert _cli(tmp_path, "t4", f"train.init_from={tmp_path / 't1' / 'checkpoint.pt'}", "train.limit_batches=1") == 0
    t4 = torch.load(tmp_path / "t4" / "checkpoint.pt", weights_only=True)["model"]
    assert all(t4[k].shape[0] == 4 for k in stats)


def test_eval_of_a_phase_2_checkpoint_after_its_parent_is_deleted(tmp_path, capsys):
    assert _cli(tmp_path, "t1", "method.time_steps=1") == 0
    assert _cli(tmp_path, "t4", f"train.init_from={tmp_path / 't1' / 'checkpoint.pt'}") == 0
    shutil.rmtree(tmp_path / "t1")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "t4" / "checkpoint.pt")]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "t=3" in out            # per-step accuracy of all four steps


def test_evaluate_and_predict_without_a_trainer():
    cfg = resolve(load_recipe("digits_tbso"), ["model.hidden=[32,32]", "train.epochs=1", "train.progress=false"])
    bundle = build_data(cfg)
    trainer = build_trainer(cfg, bundle=bundle, log=lambda *a: None)
    trainer.fit()
    model, method = trainer.net, build_method(cfg, bundle, torch.device("cpu"))
    loader = make_loader(bundle.test, 100, shuffle=False)
    res = bsnn.evaluate(model, loader, method)
    assert res.accuracy == pytest.approx(trainer.last_evaluation.accuracy)
    assert res.samples == len(bundle.test) and len(res.step_accuracy) == 4
    assert res.bn_samples == 360 and res.bn_gap is not None
    x, y = next(iter(loader))
    logits = bsnn.predict(model, x, method)
    assert logits.shape == (100, 10) and (logits.argmax(1) == y).float().mean() > 0.5
    assert model.training is False or model.training is True      # restored, whatever it was


def test_bn_warning_needs_a_gap_above_noise():
    from bsnn.train.evaluate import Evaluation

    noisy = Evaluation(0.1, 2.0, [0.1], 256, 0.098, 0.152, 256)      # 5 points on 256 near-chance samples
    real = Evaluation(0.21, 2.0, [0.21], 4000, 0.21, 0.80, 1024)
    assert noisy.bn_warning() is None
    assert "BN statistics do not fit the data" in real.bn_warning()


def _early_cue_run(bn_stats: str):
    cfg = resolve(load_recipe("digits_tbso"), ["data.name=early_cue", "data.samples=3000", "data.quiet=0.2",
                                               "model.hidden=[128,128]", "train.epochs=8", "train.progress=false",
                                               f"model.bn_stats={bn_stats}"])
    trainer = build_trainer(cfg, log=lambda *a: None)
    history = trainer.fit()
    return history[-1]["train_loss"], trainer.last_evaluation


def test_per_step_statistics_fit_a_task_whose_information_sits_in_the_first_steps():
    """Online training normalises each step by its own batch statistics; shared running statistics mix
    the cue steps with the silent ones and fit neither, per-step ones fit (same weights: same loss)."""
    loss_shared, shared = _early_cue_run("shared")
    loss_per_step, per_step = _early_cue_run("per_step")
    assert loss_shared == loss_per_step
    assert abs(per_step.bn_gap) <= 0.02 and per_step.bn_batch_accuracy > 0.8
    assert shared.bn_gap > 0.05 and shared.bn_warning() is not None
    assert per_step.accuracy > shared.accuracy
